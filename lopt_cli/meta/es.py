r"""Antithetic truncated evolution strategies.

For perturbations :math:`\epsilon_i \sim \mathcal N(0, I)`, one per task of the population,

.. math::
    \hat g = \frac{1}{|K|}\sum_{i \in K} \frac{L_i(\theta + \sigma\epsilon_i) - L_i(\theta -
    \sigma\epsilon_i)}{2\sigma}\,\epsilon_i ,

where :math:`L_i` is the mean normalised validation (or, with ``meta_loss="train"``, training)
loss of task :math:`i` over one truncation (:meth:`TruncatedProblem.truncation_meta_loss`)
and :math:`K` are the pairs whose difference is finite (all :math:`N` of them unless a pair
overflowed; :func:`lopt_cli.meta.estimator.finite_mean`). Both branches start from the same inner
state; the positive branch's state carries on. All :math:`2N` unrolls run as one ``vmap`` inside
one jitted call.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from lopt_cli.inner.unroll import InnerState, UnrollMetrics
from lopt_cli.meta.estimator import (
    EstimatorOutput,
    InnerStatesOnly,
    finite_mean,
    reset_each_task,
    summarize,
)
from lopt_cli.meta.problem import TruncatedProblem
from lopt_cli.optimizers.base import MetaParams
from task_definitions.base import Task


def unroll_antithetic(
    problem: TruncatedProblem,
    theta: MetaParams,
    delta: MetaParams,
    tasks: Task,
    pos: InnerState,
    neg: InnerState,
    truncation_length: int,
) -> tuple[InnerState, InnerState, UnrollMetrics]:
    r"""Unrolls :math:`\theta + \delta_i` from ``pos[i]`` and :math:`\theta - \delta_i` from
    ``neg[i]`` for every task ``i`` (``delta``, ``tasks`` and the states have a leading task
    axis). Returns ``(new_pos, new_neg, metrics)``, metrics leaves ``(N, 2, chunks)``
    (positive particle first).

    A ``vmap`` over tasks of a ``vmap`` over the sign: both particles of a pair read their
    task's data where it lies, so the population is never copied and, with the task axis
    sharded over devices, no task data crosses devices (concatenating ``[tasks; tasks]``
    instead moved half of it: measured as all-to-alls of the datasets on 2 CPU devices).
    """
    def pair(delta_i, task, pos_i, neg_i):
        thetas = jax.tree_util.tree_map(lambda t, d: jnp.stack([t + d, t - d]), theta, delta_i)
        states = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), pos_i, neg_i)
        return jax.vmap(problem.unroll, in_axes=(0, None, 0, None))(
            thetas, task, states, truncation_length)

    new_states, metrics = jax.vmap(pair)(delta, tasks, pos, neg)
    new_pos = jax.tree_util.tree_map(lambda x: x[:, 0], new_states)
    new_neg = jax.tree_util.tree_map(lambda x: x[:, 1], new_states)
    return new_pos, new_neg, metrics


def perturbations(theta: MetaParams, key: jax.Array, num_tasks: int) -> MetaParams:
    """Standard normal noise shaped like ``theta`` with a leading task axis."""
    leaves, treedef = jax.tree_util.tree_flatten(theta)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, (num_tasks, *x.shape), x.dtype) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, noise)


@dataclasses.dataclass(frozen=True)
class AntitheticES(InnerStatesOnly):
    """Antithetic truncated ES (see module docstring)."""

    sigma: float = 0.01
    truncation_length: int = 20
    unrolls_per_task = 2  # the antithetic pair

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def estimate(
        self,
        problem: TruncatedProblem,
        theta: MetaParams,
        tasks: Task,
        states: InnerState,
        key: jax.Array,
    ) -> EstimatorOutput:
        """One truncation of every task; returns ``(meta-gradient, new states, metrics)``."""
        num_tasks = states.step.shape[0]
        reset_key, noise_key = jax.random.split(key)
        states, was_reset, diverged = reset_each_task(problem.reset_if_done, theta, tasks, states,
                                                      reset_key)
        eps = perturbations(theta, noise_key, num_tasks)
        delta = jax.tree_util.tree_map(lambda e: self.sigma * e, eps)
        new_states, _, metrics = unroll_antithetic(
            problem, theta, delta, tasks, states, states, self.truncation_length)
        losses = problem.truncation_meta_loss(metrics)  # [N, 2]: positive, negative
        grad, dropped = finite_mean((losses[:, 0] - losses[:, 1]) / (2 * self.sigma), eps)
        return EstimatorOutput(grad, new_states,
                               summarize(losses, metrics, was_reset, diverged, dropped))
