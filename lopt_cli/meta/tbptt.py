r"""Truncated backpropagation through the unroll (TBPTT).

Every task :math:`i` is unrolled once with :math:`\theta` from its current inner state
:math:`s_i`, treated as a constant (``stop_gradient``: the truncation), and the meta-gradient is
the exact gradient of the truncated meta-loss,

.. math::
    \hat g = \frac{1}{|K|}\sum_{i\in K} \nabla_\theta L_i(\theta;\, s_i), \qquad
    L_i = \frac{1}{C}\sum_{c=1}^{C} \mathrm{normalize}(\ell_{\text{valid}, i, c}),

(:math:`\ell_{\text{train}}`, the chunk's mean training loss, with ``meta_loss="train"``:
:meth:`~lopt_cli.meta.problem.TruncatedProblem.truncation_meta_loss`), where :math:`K` are the
tasks whose loss and gradient are finite (a diverging task's gradient is dropped, never
averaged in: :func:`lopt_cli.meta.estimator.finite_mean`). Deterministic and low-variance, but
biased exactly like truncated ES (the effect of :math:`\theta` on :math:`s_i` is cut) and prone
to exploding gradients on long truncations. Per-task gradients come from one ``vmap`` of
``jax.value_and_grad`` over the tasks inside one jitted call.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from lopt_cli.inner.unroll import InnerState
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


def truncated_loss(
    theta: MetaParams, task: Task, state: InnerState, *, problem: TruncatedProblem, length: int
):
    """:math:`L_i(\\theta; s_i)` with :math:`s_i` held constant; aux: ``(new state, metrics)``."""
    state = jax.lax.stop_gradient(state)
    new_state, metrics = problem.unroll(theta, task, state, length)
    return problem.truncation_meta_loss(metrics), (new_state, metrics)


@dataclasses.dataclass(frozen=True)
class TruncatedBackprop(InnerStatesOnly):
    """Truncated backpropagation through ``truncation_length`` inner steps (module docstring)."""

    truncation_length: int = 20
    unrolls_per_task = 1  # one forward (and one backward) unroll per task

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
        states, was_reset, diverged = reset_each_task(problem.reset_if_done, theta, tasks, states,
                                                      key)
        loss_fn = functools.partial(truncated_loss, problem=problem,
                                    length=self.truncation_length)
        per_task = jax.vmap(jax.value_and_grad(loss_fn, has_aux=True), in_axes=(None, 0, 0))
        (losses, (new_states, metrics)), grads = per_task(theta, tasks, states)
        # Weight 1 per task; a task whose loss is not finite is dropped with its gradient.
        weights = jnp.where(jnp.isfinite(losses), 1.0, jnp.nan)
        grad, dropped = finite_mean(weights, grads)
        return EstimatorOutput(grad, new_states,
                               summarize(losses, metrics, was_reset, diverged, dropped))
