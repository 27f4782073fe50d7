r"""Antithetic persistent evolution strategies (PES; Vicol, Metz & Sohl-Dickstein, ICML 2021).

Truncated ES restarts every truncation from the state reached with :math:`\theta`, so it sees
only how :math:`\theta` acts *inside* the truncation and ignores how it shaped the state; its
sum over an inner run is biased (e.g. short-horizon bias of learned step sizes). PES removes the
bias by letting each particle keep its own inner state and remembering every perturbation it
has seen since its task was last (re)started.

Per task :math:`i` and truncation :math:`k`, with theta-space perturbations
:math:`\delta_{i,k} = \sigma\epsilon_{i,k}`, :math:`\epsilon_{i,k}\sim\mathcal N(0, I)`:

* the positive particle unrolls with :math:`\theta + \delta_{i,k}` from its state
  :math:`s^+_i`, the negative one with :math:`\theta - \delta_{i,k}` from :math:`s^-_i`;
* the accumulator holds the perturbations since the last reset, *including the current one*,
  :math:`\xi_{i,k} = \sum_{j \le k} \delta_{i,j}` (zeroed when the task restarts);
* the estimate (eq. "PES-A" of the paper) is

.. math::
    \hat g_k = \frac{1}{|K|}\sum_{i \in K}
      \frac{L_i(\theta + \delta_{i,k}) - L_i(\theta - \delta_{i,k})}{2\sigma^2}\,\xi_{i,k}
    \;=\; \frac{1}{|K|}\sum_{i \in K} \frac{\Delta L_{i,k}}{2\sigma}\sum_{j\le k}\epsilon_{i,j},

where :math:`L_i` is the truncation's meta-loss (mean normalised validation or training loss:
:meth:`~lopt_cli.meta.problem.TruncatedProblem.truncation_meta_loss`) and :math:`K` the pairs
whose difference is finite (:func:`lopt_cli.meta.estimator.finite_mean`). Summed over the
truncations of one inner run, :math:`\mathbb E\sum_k \hat g_k` is the gradient of the Gaussian
-smoothed total meta-loss :math:`\sum_k L_k` of the whole run.

A finished or diverged task restarts *both* particles from the same fresh state (built with the
unperturbed :math:`\theta`) and zeroes :math:`\xi`. All :math:`2N` unrolls run as one ``vmap``
inside one jitted call.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt_cli.inner.unroll import InnerState, select_state
from lopt_cli.meta.es import perturbations, unroll_antithetic
from lopt_cli.meta.estimator import EstimatorOutput, finite_mean, reset_each_task, summarize
from lopt_cli.meta.problem import TruncatedProblem, initial_states
from lopt_cli.optimizers.base import MetaParams
from task_definitions.base import Task


class PESState(NamedTuple):
    """Per-task PES state (leading axis = task when batched).

    ``pos``/``neg``: the inner states of the positive and negative particle;
    ``accumulated``: :math:`\\xi`, the sum of theta-space perturbations :math:`\\sigma\\epsilon`
    applied to the positive particle since the task was last (re)started.
    """

    pos: InnerState
    neg: InnerState
    accumulated: MetaParams


def reset_pair(
    problem: TruncatedProblem, theta: MetaParams, task: Task, state: PESState, key: jax.Array
) -> tuple[PESState, jax.Array, jax.Array]:
    """Restarts one task's particle pair if either particle finished or diverged.

    Both particles go through ``problem.reset_if_done`` with the *same* key, so a restarted
    particle gets the same fresh state; if either one restarts, both take that fresh state and
    :math:`\\xi \\leftarrow 0`. Returns ``(state, was_reset, diverged)``.
    """
    pos, pos_reset, pos_diverged = problem.reset_if_done(theta, task, state.pos, key)
    neg, neg_reset, neg_diverged = problem.reset_if_done(theta, task, state.neg, key)
    was_reset = pos_reset | neg_reset
    fresh = select_state(pos_reset, pos, neg)  # the fresh state whenever ``was_reset``
    accumulated = jax.tree_util.tree_map(
        lambda a: jnp.where(was_reset, jnp.zeros_like(a), a), state.accumulated
    )
    new_state = PESState(
        pos=select_state(was_reset, fresh, state.pos),
        neg=select_state(was_reset, fresh, state.neg),
        accumulated=accumulated,
    )
    return new_state, was_reset, pos_diverged | neg_diverged


@dataclasses.dataclass(frozen=True)
class PersistentES:
    """Antithetic PES (see module docstring): ``sigma`` is the perturbation scale."""

    sigma: float = 0.01
    truncation_length: int = 20
    unrolls_per_task = 2  # the positive and the negative particle

    def init_states(self, problem: TruncatedProblem, theta: MetaParams, tasks: Task,
                    key: jax.Array) -> PESState:
        """Both particles at each task's first state; :math:`\\xi = 0`."""
        states = initial_states(problem, theta, tasks, key)
        num_tasks = states.step.shape[0]
        zeros = jax.tree_util.tree_map(
            lambda t: jnp.zeros((num_tasks, *jnp.shape(t)), jnp.result_type(t)), theta
        )
        return PESState(pos=states, neg=states, accumulated=zeros)

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def estimate(
        self,
        problem: TruncatedProblem,
        theta: MetaParams,
        tasks: Task,
        states: PESState,
        key: jax.Array,
    ) -> EstimatorOutput:
        """One truncation of every particle; returns ``(meta-gradient, new states, metrics)``."""
        num_tasks = states.pos.step.shape[0]
        reset_key, noise_key = jax.random.split(key)
        states, was_reset, diverged = reset_each_task(functools.partial(reset_pair, problem),
                                                      theta, tasks, states, reset_key)
        delta = jax.tree_util.tree_map(
            lambda e: self.sigma * e, perturbations(theta, noise_key, num_tasks)
        )
        accumulated = jax.tree_util.tree_map(jnp.add, states.accumulated, delta)
        pos, neg, metrics = unroll_antithetic(
            problem, theta, delta, tasks, states.pos, states.neg, self.truncation_length)
        losses = problem.truncation_meta_loss(metrics)  # [N, 2]: positive, negative particle
        grad, dropped = finite_mean((losses[:, 0] - losses[:, 1]) / (2 * self.sigma**2),
                                    accumulated)
        return EstimatorOutput(grad, PESState(pos, neg, accumulated),
                               summarize(losses, metrics, was_reset, diverged, dropped))
