"""The outer loop: sample a population, estimate meta-gradients, update the meta-parameters.

``meta_train`` is a plain function of plain objects. It compiles one truncation per task shape
(the estimators' ``estimate`` is jitted) and one outer update, and leaves logging, progress bars,
held-out evaluation and files to the caller through ``on_step`` and ``on_checkpoint``.

Reproducibility: every random draw of outer step ``t`` comes from ``fold_in(run_key, t)``, and
the loop's whole state between two steps is a :class:`MetaTrainState` (meta-parameters, outer
optimizer state, estimator states, and the population as ``(task id, seed offset)`` members,
from which the tasks are rebuilt). A run restarted from a saved state therefore continues with
the same numbers as one that never stopped (see :mod:`lopt_cli.meta.checkpoint`).

Population: members that share array shapes are stacked and vmapped together. Plain families
re-seed one sampled config; a mixture (``mix_population``) first draws a task id, then fills
the population with other drawn ids of the same shape signature, re-seeding the first config
only when too few match.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.interrupt import RunStopped
from lopt_cli.meta.averaging import published_theta
from lopt_cli.meta.curriculum import HorizonCurriculum, constant
from lopt_cli.meta.estimator import GradientEstimator, host_metrics
from lopt_cli.meta.problem import TruncatedProblem, with_horizon_cap
from lopt_cli.meta.sharding import Placement
from lopt_cli.optimizers.base import MetaParams
from task_definitions.base import Task, TaskFamily, shape_signature, stack_tasks, with_seed
from task_definitions.task_ids import task_key

Member = tuple[int, int]  # (task id, seed offset): one population member, rebuildable anywhere


def make_outer_optimizer(
    learning_rate: float = 3e-3,
    warmup_steps: int = 10,
    total_steps: int | None = None,
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.99,
) -> optax.GradientTransformationExtraArgs:
    """AdamW with linear warm-up, cosine decay (when ``total_steps`` is known) and clipping."""
    if total_steps:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, max(warmup_steps, 1), max(total_steps, warmup_steps + 1),
            end_value=0.1 * learning_rate,
        )
    else:
        schedule = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
    return optax.with_extra_args_support(optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay),
    ))


def member_config(family: TaskFamily, member: Member):
    """The config of ``member``: task ``task id``'s config with its seed moved by the offset."""
    task_id, offset = member
    config = family.sample(task_key(task_id))
    return with_seed(config, config.seed + offset) if offset else config


def build_members(family: TaskFamily, members) -> Task:
    """The stacked tasks of ``members`` (all of one shape signature)."""
    return stack_tasks([family.build(member_config(family, tuple(m))) for m in members])


def sample_population(family: TaskFamily, task_id: int, num_tasks: int):
    """``num_tasks`` tasks of one shape: task ``task_id``'s config, re-seeded per member."""
    members = [(task_id, i) for i in range(num_tasks)]
    return build_members(family, members), family.sample(task_key(task_id))


@dataclasses.dataclass(frozen=True)
class MetaTrainSettings:
    """Budget of a meta-training run (plain values; built from the ``compute`` config)."""

    num_outer_steps: int
    num_tasks: int
    resample_every: int = 50
    seed: int = 0
    first_task_id: int = 0  # meta-training draws task ids from [first, first + count)
    num_task_ids: int = 100_000
    checkpoint_every: int = 0  # 0: never hand a state to ``on_checkpoint``
    curriculum: HorizonCurriculum | None = None  # None: the problem's max_horizon throughout
    mix_population: bool = False  # fill the population with other tasks of the same shapes
    mix_candidates: int = 16  # task ids drawn per missing member when mixing
    max_skipped_updates: int = 10  # stop after this many consecutive non-finite outer updates


def structure_key(config) -> tuple:
    """A cheap guess at a config's shapes: its non-float fields except the seed (a suite
    member's family name included). Equal keys usually mean equal shape signatures; the real
    signature is still checked after building."""
    if hasattr(config, "family") and hasattr(config, "config"):  # a suite member
        return (config.family, structure_key(config.config))
    if not dataclasses.is_dataclass(config):
        return (type(config).__name__,)
    return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config)
                 if f.name != "seed" and not isinstance(getattr(config, f.name), float))


def draw_population(family: TaskFamily, settings: MetaTrainSettings, key: jax.Array):
    """The population of the outer step with key ``key``: ``(members, stacked tasks)``.

    Mixing draws ``mix_candidates`` task ids per missing member, samples their configs (cheap),
    builds only those whose :func:`structure_key` matches the first task's, and keeps the ones
    whose shape signature matches; the rest of the population re-seeds the first task.
    """
    count, first_id = settings.num_task_ids, settings.first_task_id
    first = first_id + int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, count))
    first_config = member_config(family, (first, 0))
    built = {(first, 0): family.build(first_config)}
    if settings.mix_population and settings.num_tasks > 1:
        signature, structure = shape_signature(built[(first, 0)]), structure_key(first_config)
        draws = settings.mix_candidates * (settings.num_tasks - 1)
        ids = first_id + np.asarray(jax.random.randint(jax.random.fold_in(key, 3), (draws,), 0,
                                                       count))
        for task_id in dict.fromkeys(ids.tolist()):
            if len(built) == settings.num_tasks:
                break
            config = member_config(family, (task_id, 0))
            if (task_id, 0) in built or structure_key(config) != structure:
                continue
            task = family.build(config)
            if shape_signature(task) == signature:
                built[(task_id, 0)] = task
    offset = 1
    while len(built) < settings.num_tasks:
        built[(first, offset)] = family.build(member_config(family, (first, offset)))
        offset += 1
    return tuple(built), stack_tasks(list(built.values()))


class MetaTrainState(NamedTuple):
    """Everything the loop carries from one outer step to the next."""

    step: int  # the next outer step to run
    theta: MetaParams
    opt_state: Any
    states: Any  # the estimator's per-member states (None before the first population)
    members: tuple  # the population's identity, ``Member`` per row (empty before the first)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(run key, init key)`` of a run: step ``t`` draws from ``fold_in(run key, t)``."""
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    return key, init_key


def all_finite(tree) -> jax.Array:
    """Whether every entry of every leaf of ``tree`` is finite (a boolean scalar)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def outer_update(outer_tx, grad, opt_state, theta, meta_loss):
    """One step of the outer optimizer: ``(theta, opt_state, grad_norm, skipped)``.

    Non-finite gradient entries are zeroed before it. An update that would still leave a
    non-finite entry in θ or in the optimizer state (an infinite learning rate, an overflow)
    is skipped: θ and the state stay as they were and ``skipped`` is true, so a non-finite θ
    is never saved.
    """
    grad = jax.tree_util.tree_map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grad)
    updates, new_opt_state = outer_tx.update(grad, opt_state, theta, loss=meta_loss)
    new_theta = optax.apply_updates(theta, updates)
    ok = all_finite(new_theta) & all_finite(new_opt_state)
    return (optax.tree.where(ok, new_theta, theta), optax.tree.where(ok, new_opt_state, opt_state),
            optax.tree.norm(grad), ~ok)


class DivergedMetaTraining(LoptUserError):
    """Too many consecutive outer updates were non-finite; the run stops."""


def initial_state(problem: TruncatedProblem, outer_tx, settings: MetaTrainSettings,
                  theta: MetaParams | None = None) -> MetaTrainState:
    """The state before step 0 (``theta`` defaults to the learned optimizer's init)."""
    if theta is None:
        theta = problem.lopt.init(run_keys(settings.seed)[1])
    return MetaTrainState(0, theta, outer_tx.init(theta), None, ())


def checkpoint_due(settings: MetaTrainSettings, step: int) -> bool:
    """Whether the state after outer step ``step`` is handed to ``on_checkpoint``."""
    done = step + 1
    every = settings.checkpoint_every
    return bool(every) and (done % every == 0 or done == settings.num_outer_steps)


def meta_train(
    family: TaskFamily,
    problem: TruncatedProblem,
    estimator: GradientEstimator,
    outer_tx: optax.GradientTransformationExtraArgs,
    settings: MetaTrainSettings,
    on_step: Callable[[int, dict, MetaParams], None] = lambda step, metrics, theta: None,
    theta: MetaParams | None = None,
    *,
    start: MetaTrainState | None = None,
    on_checkpoint: Callable[[MetaTrainState], None] | None = None,
    placement: Placement | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> MetaParams:
    """Meta-trains ``problem.lopt`` and returns the final published meta-parameters (the
    running average when ``outer_tx`` keeps one, :mod:`lopt_cli.meta.averaging`; else θ).

    ``on_step(step, metrics, theta)`` (``theta``: the published one) is called after every
    outer step with host-side floats
    (the fields of :class:`~lopt_cli.meta.estimator.EstimatorMetrics`, ``grad_norm``,
    ``max_horizon``, and ``task_ids`` when the population was drawn);
    ``on_checkpoint(state)`` every ``settings.checkpoint_every`` steps and after the last one.
    ``start`` continues from a saved :class:`MetaTrainState` (then ``theta`` is ignored);
    ``placement`` spreads the population over devices (:mod:`lopt_cli.meta.sharding`).
    When ``stop_requested()`` turns true after an outer step that is not the last, the state
    after that step goes to ``on_checkpoint`` (if it did not already) and
    :class:`~lopt_cli.interrupt.RunStopped` is raised: a resume continues exactly there.
    """
    placement = placement or Placement()
    state = start or initial_state(problem, outer_tx, settings, theta)
    key, _ = run_keys(settings.seed)
    curriculum = settings.curriculum or constant(problem.max_horizon)
    theta = placement.replicate(state.theta)
    opt_state = placement.replicate(state.opt_state)
    members, states, tasks = state.members, state.states, None
    if members:
        tasks = placement.shard(build_members(family, members))
        states = placement.shard(states)
    update = jax.jit(outer_update, static_argnums=0)
    capped, cap, skipped_in_a_row = None, None, 0
    for step in range(state.step, settings.num_outer_steps):
        step_key = jax.random.fold_in(key, step)
        resample = tasks is None or step % settings.resample_every == 0
        if resample:
            members, tasks = draw_population(family, settings, step_key)
            tasks, capped = placement.shard(tasks), None
        if capped is None or curriculum.max_horizon(step) != cap:
            cap = curriculum.max_horizon(step)
            capped = placement.shard(with_horizon_cap(tasks, cap))
        if resample:
            states = placement.shard(estimator.init_states(
                problem, theta, capped, jax.random.fold_in(step_key, 2)))
        grad, states, metrics = estimator.estimate(problem, theta, capped, states, step_key)
        theta, opt_state, grad_norm, skipped = update(outer_tx, grad, opt_state, theta,
                                                      metrics.meta_loss)
        metrics, grad_norm, skipped = jax.device_get((metrics, grad_norm, skipped))  # one sync
        host = host_metrics(metrics)
        host["grad_norm"] = float(grad_norm)
        host["skipped_update"] = bool(skipped)
        skipped_in_a_row = skipped_in_a_row + 1 if host["skipped_update"] else 0
        host["max_horizon"] = cap
        if resample:  # which tasks were trained on: `lopt evaluate` reads them as "seen"
            host["task_ids"] = sorted({int(member[0]) for member in members})
        on_step(step, host, published_theta(opt_state, theta))
        if skipped_in_a_row >= settings.max_skipped_updates:
            raise DivergedMetaTraining(
                f"meta-training stopped at outer step {step}: {skipped_in_a_row} consecutive "
                "outer updates were non-finite and skipped (the saved learned optimizer is the "
                "last finite one); lower outer_optimizer.learning_rate or estimator.sigma")
        due = checkpoint_due(settings, step)
        if on_checkpoint is not None and due:
            on_checkpoint(MetaTrainState(step + 1, theta, opt_state, states, members))
        if step + 1 < settings.num_outer_steps and stop_requested():
            if on_checkpoint is not None and not due:
                on_checkpoint(MetaTrainState(step + 1, theta, opt_state, states, members))
            raise RunStopped(f"stopped after outer step {step + 1} of "
                             f"{settings.num_outer_steps}")
    return published_theta(opt_state, theta)
