r"""A named benchmark: fixed held-out tasks, every optimizer trained on each over trials × seeds.

Each task is an explicit family config (not a sampled task id) with its own horizon. A run
trains for ``horizon`` steps and, every ``horizon / num_points`` steps, measures the loss of the
current parameters on a **fixed sample** of each split — ``eval_batches`` batches drawn with
keys that are the same for every optimizer, trial and seed — so the curves compare optimizers,
not batch noise. Per split it records the normalised curve (mean over seeds) and the final
value (mean of the last ``final_fraction`` of the curve, over seeds).

All trials and seeds of one optimizer on all tasks of one shape and horizon are vmapped into
one compiled program, run in segments of the horizon so that a long run shows its progress
(:mod:`measured_runs`), and each task's small summary is cached on disk (:mod:`cache`) under
everything that determines it. Tasks with convolutions on a CPU backend are the exception
(:func:`loops_on_host`): XLA:CPU runs a vmapped convolution slower than the same runs one at a
time, so their runs go one (trial, seed) at a time from the host.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from lopt_cli.evaluation.cache import RunCache, cache_key
from lopt_cli.evaluation.code_version import task_code
from lopt_cli.evaluation.compare import final_value
from lopt_cli.evaluation.lapack_guard import runs_one_at_a_time
from lopt_cli.evaluation.measured_runs import (
    EVAL_SPLITS,
    host_loop_curves,
    one_run_segment,
    segments_of,
    trial_curves,
)
from lopt_cli.evaluation.partial_runs import PartStore
from lopt_cli.evaluation.runs import mean_over_seeds
from lopt_cli.interrupt import RunStopped
from task_definitions.base import config_to_dict, shape_signature, stack_tasks
from task_definitions.task_ids import seed_keys


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
    devices: int = 1  # local devices a vmapped call's runs are split over (:mod:`placement`)


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


HOST_LOOP_SETTINGS = ("auto", "always", "never")


def has_convolution(task) -> bool:
    """Whether ``task`` declares itself ``convolutional`` (the conv classifiers, whose
    convolutions are matrix products over patches) or one training loss of it contains an
    XLA convolution (traced, not run)."""
    if getattr(task, "convolutional", False):
        return True

    def loss(key):
        return task.loss(task.init(key), task.sample_batch(key, "train"), key)

    return "conv_general_dilated" in str(jax.make_jaxpr(loss)(jax.random.PRNGKey(0)))


def loops_on_host(task, setting: str) -> bool:
    """Whether ``task``'s runs go one (trial, seed) at a time from the host instead of vmapped:
    ``always``, ``never``, or ``auto``: on a CPU backend for a task with convolutions.

    On 2 CPU cores ``python -m benchmarks.run benchmark_batching`` ran ``conv_wide_digits``
    1.16× faster one at a time than vmapped (1.23× in the same session with XLA's
    convolutions, both ways 20× slower; README, "Measured results")."""
    if setting == "auto":
        return jax.default_backend() == "cpu" and has_convolution(task)
    return setting == "always"


def calls_lapack(task: BenchmarkTask, optimizer: Optimizer, spec: BenchmarkSpec) -> bool:
    """With ``host_loop: auto``, whether ``optimizer``'s step on ``task`` calls LAPACK on a CPU
    backend, so that its runs go one at a time
    (:func:`~lopt_cli.evaluation.lapack_guard.runs_one_at_a_time`)."""
    if spec.host_loop != "auto":
        return False
    m = spec.measure
    hparams = optimizer.space.trials(optimizer.num_trials, seed=m.seed)
    return runs_one_at_a_time(lambda: one_run_segment(
        optimizer.space, optimizer.shared, hparams, task.task, m.keys(), m.eval_keys(),
        task.horizon, m.num_points), f"optimizer {optimizer.name}")


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


def run_parts(num_tasks: int, optimizer: Optimizer, spec: BenchmarkSpec,
              host_loop: bool) -> int:
    """How many segments :func:`compute_runs` computes one after another (for a progress bar):
    :func:`segments_of` the measurements, once per vmapped call, or per (task, trial, seed)
    on the host loop."""
    calls = num_tasks * optimizer.num_trials * spec.measure.num_seeds if host_loop else 1
    return calls * segments_of(spec.measure.num_points)


def compute_runs(tasks: list, optimizer: Optimizer, spec: BenchmarkSpec,
                 host_loop: bool = False, part_done: Callable[[], Any] = lambda: None,
                 store: PartStore | None = None,
                 restored: Callable[[int], Any] = lambda count: None) -> list[dict]:
    """All trials × seeds of ``optimizer`` on tasks of one shape and horizon: vmapped (the
    tasks stacked), or with ``host_loop`` one (task, trial, seed) at a time
    (:func:`loops_on_host`); ``part_done()`` after each of the :func:`run_parts`. ``store``
    keeps the part's progress when it is stopped between segments
    (:mod:`~lopt_cli.evaluation.partial_runs`); ``restored(count)`` when segments of a
    stopped part are read back instead of run."""
    m = spec.measure
    hparams = optimizer.space.trials(optimizer.num_trials, seed=m.seed)
    args = (m.keys(), m.eval_keys(), tasks[0].horizon, m.num_points)
    segments = segments_of(m.num_points)
    if host_loop:
        curves = [host_loop_curves(optimizer.space, optimizer.shared, hparams, t.task, *args,
                                   segments=segments, segment_done=part_done,
                                   store=None if store is None else store.child(t.name),
                                   segments_restored=restored)
                  for t in tasks]
    elif len(tasks) == 1:
        curves = [trial_curves(optimizer.space, optimizer.shared, hparams, tasks[0].task, *args,
                               segments=segments, segment_done=part_done,
                               num_devices=spec.devices, store=store,
                               segments_restored=restored)]
    else:
        stacked = trial_curves(optimizer.space, optimizer.shared, hparams,
                               stack_tasks([t.task for t in tasks]), *args, stacked=True,
                               segments=segments, segment_done=part_done,
                               num_devices=spec.devices, store=store,
                               segments_restored=restored)
        curves = [jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
                  for i in range(len(tasks))]
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
    return [*(Optimizer("baselines", name, space, None, baseline_identity(space),
                        spec.trials[name])
              for name, space in spec.baselines.items()),
            *(Optimizer("candidates", c.name, c.space, c.shared, c.identity,
                        spec.trials["candidates"]) for c in candidates)]


def baseline_identity(space) -> str:
    """The key of a baseline's cached runs: its search space's ``repr`` (the measuring code's
    digest is in every key), and for ``opt_list`` the digest of the list's settings, a data
    file no code digest covers."""
    from lopt_cli.evaluation.search_spaces import OptList

    if isinstance(space, OptList):
        from lopt_cli.optimizers.opt_list import settings_digest

        return f"{space!r}:settings:{settings_digest()}"
    return repr(space)


class RunProgress(NamedTuple):
    """What :func:`run_benchmark` reports as it goes (each a no-op by default)."""

    finished: Callable[[str], Any] = lambda label: None  # after every task × optimizer
    started: Callable[[str, int], Any] = lambda label, parts: None  # before one is computed
    part_done: Callable[[], Any] = lambda: None  # after each of its segments
    # segments read back from a stopped run (partial_runs), done without running them again
    restored: Callable[[int], Any] = lambda count: None


def run_benchmark(spec: BenchmarkSpec, candidates: list, cache: RunCache,
                  progress: RunProgress = RunProgress(), parts: PartStore | None = None
                  ) -> dict:
    """``{task name: {"task": description, "baselines": {name: runs},
    "candidates": {name: runs}}}``. ``progress.finished(label)`` after every task × optimizer,
    ``progress.started(label, parts)`` before one that is computed (not cached), with the number
    of segments it runs one after another (:func:`run_parts`), and ``progress.part_done()``
    after each of them. With ``parts`` (a directory and a stop flag), a part asked to stop
    between two segments is kept in ``parts.child(<its key>)`` and the next call with the same
    runs continues it (:mod:`~lopt_cli.evaluation.partial_runs`).

    A run missing from the cache is computed together with the later tasks of the same shape
    and horizon that miss it too (stacked and vmapped in one call).

    Every cache key is made here, before the first run: one edited source file while the runs
    go on can neither make a computed run's key differ from the one looked up nor store runs
    of the code in memory under the edited code's key (with :func:`sources_read_once`)."""
    optimizers = optimizers_of(spec, candidates)
    descriptions = run_descriptions(spec, optimizers)
    fresh: dict = {}  # cache key -> runs computed alongside an earlier task
    results = {}
    for index, task in enumerate(spec.tasks):
        entry = {"task": task.description, "baselines": {}, "candidates": {}}
        for optimizer in optimizers:
            description = descriptions[task.name, optimizer.name]
            key = cache_key(description)
            runs = fresh.pop(key, None) or cache.lookup(description,
                                                        f"{task.name}: {optimizer.name}")
            if runs is None:
                looped = (loops_on_host(task.task, spec.host_loop)  # traced once per run
                          or calls_lapack(task, optimizer, spec))
                group = [task] if looped else [task, *(
                    t for t in same_shape(task, spec.tasks[index + 1:])[1:]
                    if not cache.contains(descriptions[t.name, optimizer.name]))]
                label = f"{task.name}: {optimizer.name}"
                progress.started(label, run_parts(len(group), optimizer, spec, looped))
                members = [descriptions[member.name, optimizer.name] for member in group]
                store = None if parts is None else parts.child(cache_key(cache.keyed(
                    {"runs": members, "host_loop": looped, "devices": spec.devices})))
                clock = PartClock(run_parts(len(group), optimizer, spec, looped),
                                  progress.restored)
                try:
                    computed = compute_runs(group, optimizer, spec, looped, progress.part_done,
                                            store, clock.restored)
                except RunStopped as stop:
                    if store is not None:
                        store.describe(label, str(stop))
                    raise RunStopped(f"{label}: {stop}") from None
                timing = clock.timing(len(group), optimizer.num_trials * spec.measure.num_seeds)
                for member, member_description, value in zip(group, members, computed):
                    fresh[cache_key(member_description)] = cache.store(
                        member_description, {**value, "timing": {**timing, "horizon":
                                                                 member.horizon}},
                        f"{member.name}: {optimizer.name}")
                if store is not None:
                    store.discard()
                runs = fresh.pop(key)
            entry[optimizer.group][optimizer.name] = runs
            progress.finished(f"{task.name}: {optimizer.name}")
        results[task.name] = entry
    return results


class PartClock:
    """How long a part took to compute, for later predictions (:mod:`benchmark_cost`):
    started at creation; segments read back from a stopped run (``restored``, passed on to
    ``report``) took no time here, so the time is scaled up to the whole part."""

    def __init__(self, segments: int, report: Callable[[int], Any]):
        self.segments, self.report, self.read_back = segments, report, 0
        self.started = time.perf_counter()

    def restored(self, count: int) -> None:
        self.read_back += count
        self.report(count)

    def timing(self, members: int, runs: int) -> dict:
        """``{"seconds", "runs"}`` of one of ``members`` tasks computed together."""
        seconds = time.perf_counter() - self.started
        run_here = max(self.segments - self.read_back, 1)
        return {"seconds": seconds * self.segments / run_here / members, "runs": runs}


def run_descriptions(spec: BenchmarkSpec, optimizers: list[Optimizer]) -> dict:
    """``{(task name, optimizer name): run_description}`` of every part of the benchmark."""
    return {(task.name, optimizer.name): run_description(task, optimizer, spec)
            for task in spec.tasks for optimizer in optimizers}


def total_runs(spec: BenchmarkSpec, num_candidates: int) -> int:
    """Number of ``progress.finished`` calls of :func:`run_benchmark` (for the progress bar)."""
    return len(spec.tasks) * (len(spec.baselines) + num_candidates)
