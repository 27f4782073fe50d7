r"""The gradient-estimator contract: what the outer loop may rely on, and what every estimator shares.

A :class:`GradientEstimator` turns one truncation of a population of tasks into a meta-gradient.
``estimate`` is a pure, jitted function of ``(problem, theta, tasks, states, key)`` that returns
an :class:`EstimatorOutput`; its :class:`EstimatorMetrics` stay device arrays until the outer
loop converts them once per step (:func:`host_metrics`).

One NaN policy (:func:`finite_mean`) serves every estimator. A *pair* ``i`` (an antithetic pair
of ES or PES, a task of TBPTT) contributes :math:`w_i v_i` (a scalar weight times a θ-shaped
vector); the estimate is

.. math::
    \hat g = \frac{1}{\max(|K|, 1)} \sum_{i \in K} w_i\, v_i, \qquad
    K = \{\, i : w_i \text{ and every entry of } v_i \text{ are finite} \,\},

and the pairs outside :math:`K` are counted in ``EstimatorMetrics.dropped``. With no non-finite
pair this is the plain mean over the population.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from lopt_cli.errors import LoptUserError
from lopt_cli.inner.unroll import UnrollMetrics
from lopt_cli.meta.problem import TruncatedProblem, initial_states
from lopt_cli.optimizers.base import MetaParams
from task_definitions.base import Task


class EstimatorMetrics(NamedTuple):
    """What one estimate reports (scalars, device arrays inside ``estimate``).

    The field names are the keys of ``metrics.jsonl``; ``grad_norm`` and ``max_horizon`` are
    added by the outer loop (the norm of the gradient it applies, the curriculum's cap).
    """

    meta_loss: jax.Array  # mean over particles of the truncation's meta-loss (problem.meta_loss)
    train_loss: jax.Array  # mean normalised training loss of the truncation
    raw_valid_loss: jax.Array  # mean validation loss before ``normalize``
    resets: jax.Array  # tasks restarted before this truncation (finished or diverged)
    diverged: jax.Array  # of those, tasks whose loss or parameters were no longer finite
    dropped: jax.Array  # pairs left out of the gradient as non-finite (:func:`finite_mean`)


class EstimatorOutput(NamedTuple):
    """``estimate``'s result: the meta-gradient (shaped like θ), the estimator's next per-task
    states (same structure, shapes and dtypes as the ones given) and the metrics."""

    grad: MetaParams
    states: Any
    metrics: EstimatorMetrics


@runtime_checkable
class GradientEstimator(Protocol):
    """A meta-gradient estimator the outer loop (:func:`lopt_cli.meta.outer.meta_train`) drives.

    Implementations: :class:`~lopt_cli.meta.es.AntitheticES`,
    :class:`~lopt_cli.meta.pes.PersistentES`, :class:`~lopt_cli.meta.tbptt.TruncatedBackprop`.
    They must be hashable (``estimate`` is jitted with the estimator and the problem static).
    """

    @property
    def truncation_length(self) -> int:
        """Inner steps each particle takes per ``estimate``."""

    @property
    def unrolls_per_task(self) -> int:
        """Particles unrolled per task (2 for an antithetic pair, 1 for TBPTT)."""

    def init_states(self, problem: TruncatedProblem, theta: MetaParams, tasks: Task,
                    key: jax.Array) -> Any:
        """The estimator's per-task states for the stacked ``tasks`` (leading axis = task)."""

    def estimate(self, problem: TruncatedProblem, theta: MetaParams, tasks: Task, states: Any,
                 key: jax.Array) -> EstimatorOutput:
        """One truncation of every task: meta-gradient, new states, metrics."""


def checked_estimator(candidate: Any) -> GradientEstimator:
    """``candidate`` if it satisfies :class:`GradientEstimator`, else a one-line user error."""
    if not isinstance(candidate, GradientEstimator):
        raise LoptUserError(f"estimator: {type(candidate).__name__} is not a gradient estimator "
                            "(needs truncation_length, unrolls_per_task, init_states, estimate; "
                            "use estimator=es|pes|tbptt or a class like them)")
    return candidate


def reset_each_task(reset_one, theta: MetaParams, tasks: Task, states: Any, key: jax.Array
                    ) -> tuple[Any, jax.Array, jax.Array]:
    """``reset_one(theta, task, state, key)`` on every task with its own key: restarts the tasks
    whose horizon is reached or whose loss diverged; ``(states, was_reset, diverged)``."""
    num_tasks = jax.tree_util.tree_leaves(states)[0].shape[0]
    keys = jax.random.split(key, num_tasks)
    return jax.vmap(reset_one, in_axes=(None, 0, 0, 0))(theta, tasks, states, keys)


class InnerStatesOnly:
    """For estimators whose per-task state is just each task's inner state (ES, TBPTT)."""

    def init_states(self, problem: TruncatedProblem, theta: MetaParams, tasks: Task,
                    key: jax.Array):
        """Each task's fresh inner state, started at a random point of its first life."""
        return initial_states(problem, theta, tasks, key)


def finite_mean(weights: jax.Array, vectors: MetaParams) -> tuple[MetaParams, jax.Array]:
    r""":math:`\frac{1}{\max(|K|,1)}\sum_{i\in K} w_i v_i` over the finite pairs :math:`K`.

    ``weights``: ``[N]``; ``vectors``: a θ-shaped tree with a leading ``N`` axis. A pair is
    dropped when its weight or any entry of its vector is not finite. Returns
    ``(mean, number of dropped pairs)``.
    """
    finite = jnp.isfinite(weights)
    for leaf in jax.tree_util.tree_leaves(vectors):
        finite = finite & jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
    kept = jnp.maximum(jnp.sum(finite), 1)
    weights = jnp.where(finite, weights, 0.0)

    def mean(leaf):
        mask = finite.reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.tensordot(weights, jnp.where(mask, leaf, 0.0), axes=1) / kept

    return jax.tree_util.tree_map(mean, vectors), jnp.sum(~finite)


def summarize(particle_losses: jax.Array, unrolled: UnrollMetrics, was_reset: jax.Array,
              diverged: jax.Array, dropped: jax.Array) -> EstimatorMetrics:
    """The metrics of one estimate: ``particle_losses`` are the particles' truncation
    meta-losses (any shape), ``unrolled`` the per-chunk records of their unrolls,
    ``was_reset``/``diverged`` per task, ``dropped`` from :func:`finite_mean`."""
    return EstimatorMetrics(
        meta_loss=jnp.mean(particle_losses),
        train_loss=jnp.mean(unrolled.train_loss),
        raw_valid_loss=jnp.mean(unrolled.raw_valid_loss),
        resets=jnp.sum(was_reset),
        diverged=jnp.sum(diverged),
        dropped=dropped,
    )


def host_metrics(metrics: EstimatorMetrics) -> dict[str, float]:
    """The metrics as Python floats keyed by field name."""
    return {name: float(value) for name, value in metrics._asdict().items()}
