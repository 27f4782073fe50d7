"""The meta-objective weighted by progress (``meta_loss_progress_power``): chunk k, ending at
step t of a life of T steps, weighs (p + 1)(t/T)^p, for every estimator.

The tiny problem and estimators of ``test_estimators.py``: the one-parameter
:class:`LearnedLRSGD` on deterministic 8-dim quadratic bowls.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_estimators import ESTIMATORS, FAMILY, PROBLEM, fresh_population, lr
from tests_support import compose_config

from lopt_cli.inner.unroll import InnerState, UnrollMetrics
from lopt_cli.meta.outer import sample_population
from lopt_cli.meta.problem import progress_weights

LIFE = 20  # steps: a 10-step truncation from step 0 ends its chunks at progress 1/4 and 1/2


def short_lives(num_tasks: int, theta):
    """``num_tasks`` bowls at step 0 of a ``LIFE``-step life."""
    tasks, states = fresh_population(num_tasks, theta)
    return tasks, states._replace(horizon=jnp.full_like(states.horizon, LIFE))


def fabricated(losses, progress) -> UnrollMetrics:
    losses, progress = jnp.asarray(losses, jnp.float32), jnp.asarray(progress, jnp.float32)
    return UnrollMetrics(losses, losses, losses, losses, progress)


def test_progress_is_the_step_over_the_horizon_after_each_chunk():
    theta = lr(-3.0)
    tasks, states = short_lives(3, theta)
    _, metrics = jax.vmap(PROBLEM.unroll, in_axes=(None, 0, 0, None))(theta, tasks, states, 15)
    np.testing.assert_allclose(metrics.progress, np.tile([5 / 20, 10 / 20, 15 / 20], (3, 1)))


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 3.0])
def test_the_weights_average_one_over_a_whole_life(power):
    chunks = 20_000
    progress = (np.arange(chunks) + 0.5) / chunks  # midpoints: the integral over [0, 1]
    assert float(jnp.mean(progress_weights(jnp.asarray(progress), power))) == pytest.approx(
        1.0, rel=1e-3)


def test_a_truncation_weighs_its_chunks_by_progress():
    metrics = fabricated([[2.0, 4.0]], [[0.25, 0.5]])
    plain = dataclasses.replace(PROBLEM, progress_power=0.0)
    squared = dataclasses.replace(PROBLEM, progress_power=2.0)
    np.testing.assert_allclose(plain.truncation_meta_loss(metrics), [3.0])
    expected = 0.5 * (3 * 0.25**2 * 2.0 + 3 * 0.5**2 * 4.0)
    np.testing.assert_allclose(squared.truncation_meta_loss(metrics), [expected], rtol=1e-6)


def test_the_weighted_tbptt_gradient_matches_finite_differences():
    """TBPTT differentiates exactly the weighted objective of its one truncation."""
    problem = dataclasses.replace(PROBLEM, progress_power=2.0)
    theta = lr(-3.0)
    tasks, states = short_lives(8, theta)

    def weighted(th):
        _, metrics = jax.vmap(problem.unroll, in_axes=(None, 0, 0, None))(th, tasks, states, 10)
        return jnp.mean(problem.truncation_meta_loss(metrics))

    h = 1e-2
    expected = float((weighted(lr(-3.0 + h)) - weighted(lr(-3.0 - h))) / (2 * h))
    out = ESTIMATORS["tbptt"].estimate(problem, theta, tasks, states, jax.random.PRNGKey(2))
    assert expected < 0
    np.testing.assert_allclose(out.grad["log_lr"], expected, rtol=2e-3)
    np.testing.assert_allclose(out.metrics.meta_loss, weighted(theta), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_optimises_the_weighted_objective(name):
    """The same unrolls (the training loss is unchanged), a different meta-loss and estimate."""
    estimator, theta = ESTIMATORS[name], lr(-3.0)
    tasks, _ = sample_population(FAMILY, 3, 4)
    states = jax.tree_util.tree_map(  # every inner state at step 0 of a LIFE-step life
        lambda s: s._replace(step=jnp.zeros_like(s.step), horizon=jnp.full_like(s.horizon, LIFE))
        if isinstance(s, InnerState) else s,
        estimator.init_states(PROBLEM, theta, tasks, jax.random.PRNGKey(1)),
        is_leaf=lambda x: isinstance(x, InnerState))
    key = jax.random.PRNGKey(2)
    plain = estimator.estimate(PROBLEM, theta, tasks, states, key)
    weighted = estimator.estimate(dataclasses.replace(PROBLEM, progress_power=2.0), theta, tasks,
                                  states, key)
    np.testing.assert_allclose(weighted.metrics.train_loss, plain.metrics.train_loss, rtol=1e-6)
    assert float(weighted.metrics.meta_loss) < 0.9 * float(plain.metrics.meta_loss)
    assert float(weighted.grad["log_lr"]) != float(plain.grad["log_lr"])


@pytest.mark.parametrize("power", [-1.0, float("nan"), float("inf")])
def test_a_bad_power_is_refused(power):
    with pytest.raises(ValueError, match="progress_power"):
        dataclasses.replace(PROBLEM, progress_power=power)


def test_the_config_key_reaches_the_problem():
    from lopt_cli.commands.meta_train import build_job

    common = ["compute=smoke", "task_family=quadratic", "optimizer=small"]
    assert build_job(compose_config("meta_train", common)).problem.progress_power == 0.0
    job = build_job(compose_config("meta_train", [*common, "meta_loss_progress_power=1.5"]))
    assert job.problem.progress_power == 1.5
