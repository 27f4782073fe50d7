r"""A named benchmark: fixed held-out tasks, every optimizer trained on each over trials × seeds.

Each task is an explicit family config (not a sampled task id) with its own horizon. A run
trains for ``horizon`` steps and, every ``horizon / num_points`` steps, measures the loss of the
current parameters on a **fixed sample** of each split — ``eval_batches`` batches drawn with
keys that are the same for every optimizer, trial and seed — so the curves compare optimizers,
not batch noise. Per split it records the normalised curve (mean over seeds) and the final
value (mean of the last ``final_fraction`` of the curve, over seeds).

All trials and seeds of one optimizer on all tasks of one shape and horizon are one jitted,
vmapped call, and each task's small summary is cached on disk (:mod:`cache`) under everything
that determines it. Tasks with convolutions on a CPU backend are the exception
(:func:`loops_on_host`): XLA:CPU runs a vmapped convolution slower than the same runs one at a
time, so their runs go one (trial, seed) at a time from the host.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt_cli.evaluation.cache import RunCache, cache_key
from lopt_cli.evaluation.candidates import make_optimizer
from lopt_cli.evaluation.code_version import task_code
from lopt_cli.evaluation.compare import final_value
from lopt_cli.evaluation.runs import mean_over_seeds
from lopt_cli.inner.unroll import init_inner_state, train_step
from task_definitions.base import config_to_dict, shape_signature, stack_tasks
from task_definitions.task_ids import seed_keys

EVAL_SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class BenchmarkTask:
    """One held-out task: a name, its family (which builds it), its config and horizon."""

    name: str
    family: Any
    config: Any
    horizon: int

    @property
    def description(self) -> dict:
        return {"name": self.name, "horizon": self.horizon,
                **config_to_dict(self.config, getattr(self.family, "name", None))}

    @functools.cached_property
    def task(self):
        return self.family.build(self.config)


@dataclasses.dataclass(frozen=True)
class MeasureSettings:
    """How every run is measured (the same for every optimizer)."""

    num_seeds: int
    num_points: int
    eval_batches: int
    final_fraction: float
    seed: int = 0

    def keys(self) -> jax.Array:
        return seed_keys(self.seed, self.num_seeds)

    def eval_keys(self) -> jax.Array:
        """The fixed sample: one key per batch, shared by every optimizer, trial and seed."""
        return jax.random.split(jax.random.PRNGKey(10_000 + self.seed), self.eval_batches)


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark: tasks, baselines with their trial budgets, measurement and tuning."""

    name: str
    tasks: tuple
    baselines: dict  # name -> search space
    trials: dict  # name -> trials per task (baselines); "candidates" -> trials per candidate
    trial_counts: tuple
    measure: MeasureSettings
    long_horizon: int  # tasks of at least this many steps report horizon generalisation
    host_loop: str = "auto"  # "auto", "always" or "never": see :func:`loops_on_host`


def fixed_sample(task, eval_keys: jax.Array, split: str) -> tuple:
    """The fixed sample of ``split``: ``(batches, loss keys)``, one batch per key (drawn once
    per run, not at every evaluation)."""
    batch_keys, loss_keys = jnp.moveaxis(jax.vmap(jax.random.split)(eval_keys), 1, 0)
    return jax.vmap(lambda k: task.sample_batch(k, split))(batch_keys), loss_keys


def fixed_sample_loss(task, params, sample: tuple) -> jax.Array:
    """Mean loss of ``params`` over a :func:`fixed_sample`."""
    batches, loss_keys = sample
    return jnp.mean(jax.vmap(lambda b, k: task.loss(params, b, k))(batches, loss_keys))


def measured_curve(task, opt, key: jax.Array, eval_keys: jax.Array, horizon: int,
                   num_points: int) -> dict:
    """Trains ``horizon`` steps; after each ``horizon / num_points`` the raw and normalised
    losses on the fixed sample of every split (``{split: [point]}``, ``{f"raw_{split}": …}``).
    The validation value is what a learned optimizer reads as ``valid_loss``."""
    every = horizon // num_points
    state = init_inner_state(task, lambda _: opt, key, jnp.asarray(horizon))
    step_keys = jax.random.split(state.key, num_points * every * 2)
    step_keys = step_keys.reshape((num_points, every, 2) + step_keys.shape[1:])

    samples = {split: fixed_sample(task, eval_keys, split) for split in EVAL_SPLITS}

    def chunk(state, keys):
        state, _ = jax.lax.scan(lambda s, k: train_step(task, opt, s, k), state, keys)
        losses = {split: fixed_sample_loss(task, state.params, samples[split])
                  for split in EVAL_SPLITS}
        state = state._replace(valid_loss=losses["valid"])
        return state, {**losses, **{f"norm_{s}": task.normalize(v) for s, v in losses.items()}}

    _, curves = jax.lax.scan(chunk, state, step_keys)
    return curves


@functools.partial(jax.jit, static_argnames=("space", "horizon", "num_points"))
def trial_curves(space, shared, hparams: dict, task, keys, eval_keys, horizon: int,
                 num_points: int) -> dict:
    """Every trial of ``space`` over every seed (leading axes: trial, seed), one compiled call."""

    def one(setting, key):
        opt = make_optimizer(space, setting, horizon, shared)
        return measured_curve(task, opt, key, eval_keys, horizon, num_points)

    return jax.vmap(lambda setting: jax.vmap(lambda k: one(setting, k))(keys))(hparams)


def summarize_curves(curves: dict, measure: MeasureSettings, horizon: int) -> dict:
    """Per split: final normalised values ``[trial]`` and mean curves ``[trial][point]``;
    ``diverged[trial]``: a seed's raw training loss stopped being finite."""
    curves = jax.device_get(curves)
    every = horizon // measure.num_points
    raw_train = np.asarray(curves["train"], float)
    return {
        "steps": [every * (i + 1) for i in range(measure.num_points)],
        "final": {s: final_value(curves[f"norm_{s}"], measure.final_fraction).tolist()
                  for s in EVAL_SPLITS},
        "curves": {s: mean_over_seeds(np.asarray(curves[f"norm_{s}"], float))
                   for s in EVAL_SPLITS},
        "diverged": (~np.all(np.isfinite(raw_train), axis=(-2, -1))).tolist(),
    }


@functools.partial(jax.jit, static_argnames=("space", "horizon", "num_points"))
def stacked_trial_curves(space, shared, hparams: dict, tasks, keys, eval_keys, horizon: int,
                         num_points: int) -> dict:
    """:func:`trial_curves` of same-shape tasks stacked on a leading axis, in one call."""
    return jax.vmap(lambda task: trial_curves(space, shared, hparams, task, keys, eval_keys,
                                              horizon, num_points))(tasks)


HOST_LOOP_SETTINGS = ("auto", "always", "never")


def has_convolution(task) -> bool:
    """Whether one training loss of ``task`` contains a convolution (traced, not run)."""
    def loss(key):
        return task.loss(task.init(key), task.sample_batch(key, "train"), key)

    return "conv_general_dilated" in str(jax.make_jaxpr(loss)(jax.random.PRNGKey(0)))


def loops_on_host(task, setting: str) -> bool:
    """Whether ``task``'s runs go one (trial, seed) at a time from the host instead of vmapped:
    ``always``, ``never``, or ``auto``: on a CPU backend for a task with convolutions.

    On 2 CPU cores ``python -m benchmarks.run benchmark_batching`` ran ``conv_wide_digits``
    1.7× faster one at a time than vmapped (README, "Measured results")."""
    if setting == "auto":
        return jax.default_backend() == "cpu" and has_convolution(task)
    return setting == "always"


def host_loop_curves(space, shared, hparams: dict, task, keys, eval_keys, horizon: int,
                     num_points: int, call_done: Callable[[], Any] = lambda: None) -> dict:
    """:func:`trial_curves`, one (trial, seed) per compiled call (the same program each time),
    reassembled on the host with leading axes trial, seed; ``call_done()`` after each call."""
    num_trials = len(jax.tree_util.tree_leaves(hparams)[0])
    rows = []
    for i in range(num_trials):
        setting = {k: v[i:i + 1] for k, v in hparams.items()}
        runs = []
        for j in range(len(keys)):
            runs.append(jax.device_get(trial_curves(space, shared, setting, task, keys[j:j + 1],
                                                    eval_keys, horizon, num_points)))
            call_done()
        rows.append(jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=1), *runs))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *rows)


class Optimizer(NamedTuple):
    """A baseline or a candidate as the benchmark runs it."""

    group: str  # "baselines" or "candidates"
    name: str
    space: Any
    shared: Any
    identity: str
    num_trials: int


def run_description(task: BenchmarkTask, optimizer: Optimizer, spec: BenchmarkSpec) -> dict:
    """Everything that determines an optimizer's runs on a task: the cache key."""
    return {"kind": "benchmark-run", "task": task.description, "code": task_code(task.family),
            "optimizer": optimizer.identity,
            "hparams": optimizer.space.trials(optimizer.num_trials, seed=spec.measure.seed),
            "measure": dataclasses.asdict(spec.measure)}


def compiled_calls(num_tasks: int, optimizer: Optimizer, spec: BenchmarkSpec,
                   host_loop: bool) -> int:
    """How many compiled calls :func:`compute_runs` makes (for a progress bar)."""
    return num_tasks * optimizer.num_trials * spec.measure.num_seeds if host_loop else 1


def compute_runs(tasks: list, optimizer: Optimizer, spec: BenchmarkSpec,
                 host_loop: bool = False, call_done: Callable[[], Any] = lambda: None
                 ) -> list[dict]:
    """All trials × seeds of ``optimizer`` on tasks of one shape and horizon: one call, or with
    ``host_loop`` one per (task, trial, seed) (:func:`loops_on_host`); ``call_done()`` after
    each of the :func:`compiled_calls`."""
    m = spec.measure
    hparams = optimizer.space.trials(optimizer.num_trials, seed=m.seed)
    args = (m.keys(), m.eval_keys(), tasks[0].horizon, m.num_points)
    if host_loop:
        curves = [host_loop_curves(optimizer.space, optimizer.shared, hparams, t.task, *args,
                                   call_done=call_done) for t in tasks]
    elif len(tasks) == 1:
        curves = [trial_curves(optimizer.space, optimizer.shared, hparams, tasks[0].task, *args)]
    else:
        stacked = jax.device_get(stacked_trial_curves(  # one transfer, sliced on the host
            optimizer.space, optimizer.shared, hparams, stack_tasks([t.task for t in tasks]),
            *args))
        curves = [jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
                  for i in range(len(tasks))]
    if not host_loop:
        call_done()
    plain_hparams = {k: np.asarray(v).tolist() for k, v in hparams.items()}
    return [{**summarize_curves(c, m, t.horizon), "hparams": plain_hparams}
            for c, t in zip(curves, tasks)]


def same_shape(task: BenchmarkTask, others: list) -> list:
    """``task`` and those of ``others`` that stack with it (same horizon, config kind, shapes)."""
    stackable = [t for t in others if t.horizon == task.horizon
                 and type(t.config) is type(task.config)]
    if not stackable:
        return [task]
    signature = shape_signature(task.task)
    return [task, *(t for t in stackable if shape_signature(t.task) == signature)]


def optimizers_of(spec: BenchmarkSpec, candidates: list) -> list[Optimizer]:
    return [*(Optimizer("baselines", name, space, None, repr(space), spec.trials[name])
              for name, space in spec.baselines.items()),
            *(Optimizer("candidates", c.name, c.space, c.shared, c.identity,
                        spec.trials["candidates"]) for c in candidates)]


class RunProgress(NamedTuple):
    """What :func:`run_benchmark` reports as it goes (each a no-op by default)."""

    finished: Callable[[str], Any] = lambda label: None  # after every task × optimizer
    started: Callable[[str, int], Any] = lambda label, calls: None  # before one is computed
    call_done: Callable[[], Any] = lambda: None  # after each of its compiled calls


def run_benchmark(spec: BenchmarkSpec, candidates: list, cache: RunCache,
                  progress: RunProgress = RunProgress()) -> dict:
    """``{task name: {"task": description, "baselines": {name: runs},
    "candidates": {name: runs}}}``. ``progress.finished(label)`` after every task × optimizer,
    ``progress.started(label, calls)`` before one that is computed (not cached), with the number
    of compiled calls it makes, and ``progress.call_done()`` after each of them.

    A run missing from the cache is computed together with the later tasks of the same shape
    and horizon that miss it too (stacked and vmapped in one call)."""
    fresh: dict = {}  # cache key -> runs computed alongside an earlier task
    results = {}
    for index, task in enumerate(spec.tasks):
        entry = {"task": task.description, "baselines": {}, "candidates": {}}
        for optimizer in optimizers_of(spec, candidates):
            key = cache_key(run_description(task, optimizer, spec))
            runs = fresh.pop(key, None) or cache.lookup(run_description(task, optimizer, spec))
            if runs is None:
                looped = loops_on_host(task.task, spec.host_loop)  # traced once per run
                group = [task] if looped else [task, *(
                    t for t in same_shape(task, spec.tasks[index + 1:])[1:]
                    if not cache.contains(run_description(t, optimizer, spec)))]
                progress.started(f"{task.name}: {optimizer.name}",
                                 compiled_calls(len(group), optimizer, spec, looped))
                computed = compute_runs(group, optimizer, spec, looped, progress.call_done)
                for member, value in zip(group, computed):
                    description = run_description(member, optimizer, spec)
                    fresh[cache_key(description)] = cache.store(description, value)
                runs = fresh.pop(key)
            entry[optimizer.group][optimizer.name] = runs
            progress.finished(f"{task.name}: {optimizer.name}")
        results[task.name] = entry
    return results


def total_runs(spec: BenchmarkSpec, num_candidates: int) -> int:
    """Number of ``progress.finished`` calls of :func:`run_benchmark` (for the progress bar)."""
    return len(spec.tasks) * (len(spec.baselines) + num_candidates)
