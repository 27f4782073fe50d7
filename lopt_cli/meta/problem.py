r"""The truncated inner problem: a population of tasks trained by a learned optimizer.

Kept apart from the gradient estimators (as in learned_optimization): this module knows how to
start, reset and unroll tasks; an estimator only decides which meta-parameters to unroll with and
how to turn the resulting losses into a meta-gradient.

Horizons are drawn log-uniformly from ``[min_horizon, max_horizon]``; a task whose step reaches
its horizon, or whose loss or parameters stop being finite, is restarted with a fresh
initialisation and horizon at the start of the next truncation. The first life of every task is
cut at a uniformly random point so that the population is not in lock-step.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt_cli.meta.unroll import (
    InnerState,
    UnrollMetrics,
    has_diverged,
    init_inner_state,
    select_state,
    unroll,
)
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams
from task_definitions.base import Task


@dataclasses.dataclass(frozen=True)
class TruncatedProblem:
    """Static description of inner training; hashable, so it can be a static jit argument."""

    lopt: LearnedOptimizer
    min_horizon: int = 100
    max_horizon: int = 1000
    valid_every: int = 5

    def sample_horizon(self, key: jax.Array) -> jax.Array:
        """A horizon drawn log-uniformly from ``[min_horizon, max_horizon]``."""
        log_h = jax.random.uniform(
            key, minval=jnp.log(self.min_horizon), maxval=jnp.log(self.max_horizon + 1.0)
        )
        return jnp.floor(jnp.exp(log_h)).astype(jnp.int32)

    def fresh_state(self, theta: MetaParams, task: Task, key: jax.Array) -> InnerState:
        """A newly initialised task with a freshly sampled horizon."""
        horizon_key, init_key = jax.random.split(key)
        horizon = self.sample_horizon(horizon_key)
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
