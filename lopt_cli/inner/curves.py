"""Inner training to a horizon for evaluation: many seeds and hyperparameters in one jit.

Every function returns per-chunk curves (see :class:`lopt_cli.inner.unroll.UnrollMetrics`):
``valid_every`` training steps, then one validation batch. Seeds, and for Adam the learning
rate grid, are vmapped, so one task shape costs one compilation per optimizer kind.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from lopt_cli.inner.unroll import UnrollMetrics, init_inner_state, unroll
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams
from lopt_cli.optimizers.baselines import adam_with_lr
from task_definitions.base import Task


def train_curve(task: Task, opt: optax.GradientTransformationExtraArgs, key: jax.Array,
                horizon: int, valid_every: int) -> UnrollMetrics:
    """Trains one fresh task for ``horizon`` steps with ``opt``; returns its curves."""
    state = init_inner_state(task, lambda _: opt, key, jnp.asarray(horizon))
    _, metrics = unroll(task, opt, state, horizon // valid_every, valid_every)
    return metrics


@functools.partial(jax.jit, static_argnames=("lopt", "horizon", "valid_every"))
def learned_curves(lopt: LearnedOptimizer, theta: MetaParams, task: Task, keys: jax.Array,
                   horizon: int, valid_every: int) -> UnrollMetrics:
    """Curves of the learned optimizer, one per key (leading axis: seed)."""
    opt = lopt.transform(theta, horizon)
    return jax.vmap(lambda k: train_curve(task, opt, k, horizon, valid_every))(keys)


@functools.partial(jax.jit, static_argnames=("horizon", "valid_every"))
def adam_grid_curves(task: Task, learning_rates: jax.Array, keys: jax.Array, horizon: int,
                     valid_every: int) -> UnrollMetrics:
    """Curves of Adam for every learning rate and key (leading axes: rate, seed)."""

    def one(rate, key):
        return train_curve(task, adam_with_lr(rate), key, horizon, valid_every)

    return jax.vmap(lambda rate: jax.vmap(lambda k: one(rate, k))(keys))(learning_rates)
