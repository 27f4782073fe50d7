r"""Antithetic truncated evolution strategies.

For perturbations :math:`\epsilon_i \sim \mathcal N(0, I)`, one per task of the population,

.. math::
    \hat g = \frac{1}{N}\sum_{i=1}^{N} \frac{L_i(\theta + \sigma\epsilon_i) - L_i(\theta -
    \sigma\epsilon_i)}{2\sigma}\,\epsilon_i ,

where :math:`L_i` is the mean normalised validation loss of task :math:`i` over one truncation.
Both branches start from the same inner state; the positive branch's state carries on. All
:math:`2N` unrolls run as one ``vmap`` inside one jitted call. Non-finite differences are dropped.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from lopt_cli.meta.problem import TruncatedProblem, initial_states
from lopt_cli.meta.unroll import InnerState
from lopt_cli.optimizers.base import MetaParams
from task_definitions.base import Task


def _tile2(tree):
    """Repeats every leaf twice along a new leading (antithetic) axis, then flattens it."""
    return jax.tree_util.tree_map(lambda x: jnp.concatenate([x, x]), tree)


def _positive_half(tree, num_tasks: int):
    return jax.tree_util.tree_map(lambda x: x[:num_tasks], tree)


def perturbations(theta: MetaParams, key: jax.Array, num_tasks: int) -> MetaParams:
    """Standard normal noise shaped like ``theta`` with a leading task axis."""
    leaves, treedef = jax.tree_util.tree_flatten(theta)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, (num_tasks, *x.shape), x.dtype) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, noise)


@dataclasses.dataclass(frozen=True)
class AntitheticES:
    """Antithetic truncated ES (see module docstring)."""

    sigma: float = 0.01
    truncation_length: int = 20
    unrolls_per_task = 2  # the antithetic pair

    def init_states(self, problem: TruncatedProblem, theta: MetaParams, tasks: Task,
                    key: jax.Array) -> InnerState:
        """The estimator's per-task state: here simply each task's inner state."""
        return initial_states(problem, theta, tasks, key)

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def estimate(
        self,
        problem: TruncatedProblem,
        theta: MetaParams,
        tasks: Task,
        states: InnerState,
        key: jax.Array,
    ) -> tuple[MetaParams, InnerState, dict]:
        """One truncation of every task; returns ``(meta-gradient, new states, metrics)``."""
        num_tasks = states.step.shape[0]
        reset_key, noise_key = jax.random.split(key)
        reset_keys = jax.random.split(reset_key, num_tasks)
        states, was_reset, diverged = jax.vmap(problem.reset_if_done, in_axes=(None, 0, 0, 0))(
            theta, tasks, states, reset_keys
        )
        eps = perturbations(theta, noise_key, num_tasks)
        signed = jax.tree_util.tree_map(lambda e: jnp.concatenate([e, -e]), eps)
        thetas = jax.tree_util.tree_map(lambda t, e: t + self.sigma * e, theta, signed)
        new_states, metrics = jax.vmap(problem.unroll, in_axes=(0, 0, 0, None))(
            thetas, _tile2(tasks), _tile2(states), self.truncation_length
        )
        losses = jnp.mean(metrics.valid_loss, axis=1)  # [2N]
        diff = (losses[:num_tasks] - losses[num_tasks:]) / (2 * self.sigma)
        diff = jnp.where(jnp.isfinite(diff), diff, 0.0)
        grad = jax.tree_util.tree_map(
            lambda e: jnp.tensordot(diff, e, axes=1) / num_tasks, eps
        )
        summary = {
            "meta_loss": jnp.mean(losses),
            "train_loss": jnp.mean(metrics.train_loss),
            "raw_valid_loss": jnp.mean(metrics.raw_valid_loss),
            "resets": jnp.sum(was_reset),
            "diverged": jnp.sum(diverged),
        }
        return grad, _positive_half(new_states, num_tasks), summary
