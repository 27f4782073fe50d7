r"""The truncated inner problem: a population of tasks trained by a learned optimizer.

Kept apart from the gradient estimators (as in learned_optimization): this module knows how to
start, reset and unroll tasks; an estimator only decides which meta-parameters to unroll with and
how to turn the resulting losses into a meta-gradient.

Horizons are drawn log-uniformly from ``[min_horizon, max_horizon]``; a task whose step reaches
its horizon, or whose loss or parameters stop being finite, is restarted with a fresh
initialisation and horizon at the start of the next truncation. The first life of every task is
cut at a uniformly random point so that the population is not in lock-step.

A curriculum grows the largest horizon over meta-training. ``TruncatedProblem`` is a static jit
argument, so the current cap travels as data instead: :class:`PopulationTask` wraps a task with
its ``max_horizon`` (an int32 leaf, one per member when stacked), and a growing cap reuses the
compiled truncation.

The meta-objective of a truncation is the mean over its chunks of a normalised loss of the
unroll (:class:`~lopt_cli.inner.unroll.UnrollMetrics`): the validation loss (``meta_loss="valid"``,
the default), the training loss (``"train"``) or their mean (``"mean"``,
:math:`\tfrac12(\ell_\text{train} + \ell_\text{valid})`: a learned optimizer judged on both
bars at once), chosen here once for every estimator (:func:`chunk_meta_loss`).

``progress_power`` :math:`p \ge 0` weighs the end of training: chunk :math:`k`, ending at step
:math:`t_k` of a life of :math:`T` steps, counts with :math:`w_k = (p + 1)(t_k/T)^p`, so a
truncation's meta-loss is :math:`\frac1K \sum_k w_k\,\ell_k` (:func:`progress_weights`).
The weights average 1 over a whole life (:math:`\int_0^1 (p+1)x^p\,dx = 1`), so the objective
keeps the unweighted one's scale; :math:`p = 0` is the plain mean.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from lopt_cli.inner.unroll import (
    InnerState,
    UnrollMetrics,
    has_diverged,
    init_inner_state,
    select_state,
    unroll,
)
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams
from task_definitions.base import Task

META_LOSSES = ("valid", "train", "mean")


def chunk_meta_loss(metrics: UnrollMetrics, meta_loss: str) -> jax.Array:
    """Per chunk, the normalised loss that ``meta_loss`` (one of :data:`META_LOSSES`) names."""
    if meta_loss == "train":
        return metrics.train_loss
    if meta_loss == "mean":
        return 0.5 * (metrics.train_loss + metrics.valid_loss)
    return metrics.valid_loss


def progress_weights(progress: jax.Array, power: float) -> jax.Array:
    r"""Chunk weights :math:`(p + 1)\,(t/T)^p` for the progress :math:`t/T` of each chunk."""
    return (power + 1.0) * jnp.power(progress, power)


@struct.dataclass
class PopulationTask:
    """A population member: ``task`` plus the curriculum's current horizon cap (traced).

    It is itself a task (it forwards the task contract), so unrolls need not unwrap it.
    """

    task: Task
    max_horizon: jax.Array  # int32: fresh lives get horizons <= this cap

    def init(self, key: jax.Array):
        return self.task.init(key)

    def loss(self, params, batch, key: jax.Array) -> jax.Array:
        return self.task.loss(params, batch, key)

    def sample_batch(self, key: jax.Array, split: str):
        return self.task.sample_batch(key, split)

    def normalize(self, loss: jax.Array) -> jax.Array:
        return self.task.normalize(loss)


def with_horizon_cap(tasks: Task, max_horizon: int) -> PopulationTask:
    """Stacked ``tasks`` (leading axis = member) wrapped with the cap ``max_horizon``."""
    tasks = tasks.task if isinstance(tasks, PopulationTask) else tasks
    num_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    return PopulationTask(tasks, jnp.full((num_tasks,), max_horizon, jnp.int32))


@dataclasses.dataclass(frozen=True)
class TruncatedProblem:
    """Static description of inner training; hashable, so it can be a static jit argument."""

    lopt: LearnedOptimizer
    min_horizon: int = 100
    max_horizon: int = 1000
    valid_every: int = 5
    meta_loss: str = "valid"  # one of META_LOSSES: which normalised loss the meta-loss averages
    progress_power: float = 0.0  # p: chunk k weighs (p + 1)(t_k/T)^p (0: the plain mean)

    def __post_init__(self):
        if self.meta_loss not in META_LOSSES:
            raise ValueError(f"meta_loss={self.meta_loss!r}: expected one of {META_LOSSES}")
        if not (math.isfinite(self.progress_power) and self.progress_power >= 0):
            raise ValueError(f"progress_power={self.progress_power!r}: expected a finite "
                             "number >= 0")

    def truncation_meta_loss(self, metrics: UnrollMetrics) -> jax.Array:
        """The meta-loss of a truncation: the mean over its chunks (last axis of ``metrics``) of
        the normalised loss that ``meta_loss`` names (:func:`chunk_meta_loss`), each weighted by
        its progress when ``progress_power`` > 0 (:func:`progress_weights`)."""
        losses = chunk_meta_loss(metrics, self.meta_loss)
        if self.progress_power:
            losses = losses * progress_weights(metrics.progress, self.progress_power)
        return jnp.mean(losses, axis=-1)

    def sample_horizon(self, key: jax.Array, max_horizon: jax.Array | None = None) -> jax.Array:
        """A horizon drawn log-uniformly from ``[min_horizon, max_horizon]``.

        ``max_horizon`` (traced) overrides the static cap; ``min_horizon`` then shrinks to it.
        """
        if max_horizon is None:
            low, high = jnp.log(self.min_horizon), jnp.log(self.max_horizon + 1.0)
        else:
            cap = jnp.asarray(max_horizon, jnp.float32)
            low, high = jnp.log(jnp.minimum(float(self.min_horizon), cap)), jnp.log(cap + 1.0)
        log_h = jax.random.uniform(key, minval=low, maxval=high)
        return jnp.floor(jnp.exp(log_h)).astype(jnp.int32)

    def fresh_state(self, theta: MetaParams, task: Task, key: jax.Array) -> InnerState:
        """A newly initialised task with a freshly sampled horizon (capped for a
        :class:`PopulationTask`)."""
        horizon_key, init_key = jax.random.split(key)
        cap = task.max_horizon if isinstance(task, PopulationTask) else None
        horizon = self.sample_horizon(horizon_key, cap)
        return init_inner_state(task, lambda h: self.lopt.transform(theta, h), init_key, horizon)

    def first_state(self, theta: MetaParams, task: Task, key: jax.Array) -> InnerState:
        """A fresh task whose first life ends at a random step, to desynchronise the population."""
        state_key, cut_key = jax.random.split(key)
        state = self.fresh_state(theta, task, state_key)
        cut = jax.random.randint(cut_key, (), 1, state.horizon + 1)
        return state._replace(horizon=cut)

    def reset_if_done(
        self, theta: MetaParams, task: Task, state: InnerState, key: jax.Array
    ) -> tuple[InnerState, jax.Array, jax.Array]:
        """Restarts a finished or diverged task. Returns ``(state, was_reset, diverged)``."""
        diverged = has_diverged(state)
        done = (state.step >= state.horizon) | diverged
        state = select_state(done, self.fresh_state(theta, task, key), state)
        return state, done, diverged

    def unroll(
        self, theta: MetaParams, task: Task, state: InnerState, truncation_length: int
    ) -> tuple[InnerState, UnrollMetrics]:
        """Trains ``truncation_length`` steps with the optimizer of ``theta``."""
        if truncation_length % self.valid_every:
            raise ValueError(
                f"truncation_length={truncation_length} must be a multiple of "
                f"valid_every={self.valid_every}"
            )
        opt = self.lopt.transform(theta, state.horizon)
        return unroll(task, opt, state, truncation_length // self.valid_every, self.valid_every)


def initial_states(
    problem: TruncatedProblem, theta: MetaParams, tasks: Task, key: jax.Array
) -> InnerState:
    """First states of a stacked population of tasks (leading axis = task)."""
    num_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    keys = jax.random.split(key, num_tasks)
    return jax.vmap(problem.first_state, in_axes=(None, 0, 0))(theta, tasks, keys)
