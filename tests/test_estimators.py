"""Meta-gradient estimators: correctness against finite differences, resets, divergence, the
shared contract (Protocol, metrics record) and the one NaN policy.

Tiny problem throughout: the one-parameter :class:`LearnedLRSGD` on deterministic 8-dim
quadratic bowls of condition number 1-10. Statistical checks compare a mean of independent
estimates with a finite difference, with tolerances in units of the estimate's standard error.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from tests_support import compose_config, group_options
from toy_lopt import LearnedLRSGD

from lopt_cli.commands.common import build
from lopt_cli.errors import LoptUserError
from lopt_cli.meta.es import AntitheticES
from lopt_cli.meta.estimator import (
    EstimatorMetrics,
    EstimatorOutput,
    GradientEstimator,
    checked_estimator,
    finite_mean,
)
from lopt_cli.meta.heldout import HeldOutEvaluator
from lopt_cli.meta.outer import (
    MetaTrainSettings,
    make_outer_optimizer,
    meta_train,
    sample_population,
)
from lopt_cli.meta.pes import PersistentES, PESState, reset_pair
from lopt_cli.meta.problem import META_LOSSES, TruncatedProblem, initial_states
from lopt_cli.meta.tbptt import TruncatedBackprop
from task_definitions.base import stack_tasks
from task_definitions.quadratic import QuadraticFamily, QuadraticTask
from task_definitions.task_ids import task_key

FAMILY = QuadraticFamily(dims=(8,), condition_number=(1.0, 10.0), noise=(0.0,))
PROBLEM = TruncatedProblem(LearnedLRSGD(), min_horizon=200, max_horizon=400, valid_every=5)
ESTIMATORS = {
    "es": AntitheticES(sigma=0.01, truncation_length=10),
    "pes": PersistentES(sigma=0.01, truncation_length=10),
    "tbptt": TruncatedBackprop(truncation_length=10),
}


def lr(log_lr: float) -> dict:
    return {"log_lr": jnp.asarray(log_lr, jnp.float32)}


def fresh_population(num_tasks: int, theta):
    """``num_tasks`` bowls, each at step 0 of a life long enough for every test here."""
    tasks, _ = sample_population(FAMILY, 3, num_tasks)
    keys = jax.random.split(jax.random.PRNGKey(1), num_tasks)
    states = jax.vmap(PROBLEM.fresh_state, in_axes=(None, 0, 0))(theta, tasks, keys)
    return tasks, states


def total_meta_loss(theta, tasks, states, truncation_length: int, num_truncations: int,
                    loss: str = "valid_loss"):
    """Mean over tasks of :math:`\\sum_k L_k`, the per-truncation meta-losses of one long run
    (``loss``: the field of the unroll's metrics they average)."""
    _, metrics = jax.vmap(PROBLEM.unroll, in_axes=(None, 0, 0, None))(
        theta, tasks, states, truncation_length * num_truncations)
    per_truncation = getattr(metrics, loss).reshape(states.step.shape[0], num_truncations, -1)
    return jnp.mean(jnp.sum(jnp.mean(per_truncation, axis=2), axis=1))


def central_difference(fn, theta, h: float = 1e-2) -> float:
    return float((fn(lr(theta["log_lr"] + h)) - fn(lr(theta["log_lr"] - h))) / (2 * h))


def grouped(tree, groups: int):
    """Splits the task axis into ``groups`` independent sub-populations."""
    return jax.tree_util.tree_map(lambda x: x.reshape(groups, -1, *x.shape[1:]), tree)


def summed_estimates(estimator, theta, tasks, states, num_truncations: int, groups: int):
    """Per sub-population, the sum of the estimates over consecutive truncations: ``[groups]``."""
    estimate = jax.jit(jax.vmap(lambda t, s, k: estimator.estimate(PROBLEM, theta, t, s, k)))
    tasks, states = grouped(tasks, groups), grouped(states, groups)
    total = np.zeros(groups)
    for k in range(num_truncations):
        keys = jax.random.split(jax.random.PRNGKey(100 + k), groups)
        grad, states, _ = estimate(tasks, states, keys)
        total += np.asarray(grad["log_lr"])
    return total


@pytest.mark.parametrize("meta_loss", ["valid", "train"])
def test_tbptt_matches_finite_differences_of_the_truncated_meta_loss(meta_loss):
    theta, field = lr(-3.0), f"{meta_loss}_loss"
    problem = dataclasses.replace(PROBLEM, meta_loss=meta_loss)
    tasks, _ = sample_population(FAMILY, 3, 16)
    states = initial_states(PROBLEM, theta, tasks, jax.random.PRNGKey(1))
    states = states._replace(horizon=jnp.full_like(states.horizon, 400))  # no reset
    grad, new_states, metrics = ESTIMATORS["tbptt"].estimate(problem, theta, tasks, states,
                                                             jax.random.PRNGKey(2))
    expected = central_difference(
        lambda th: total_meta_loss(th, tasks, states, 10, 1, field), theta)
    assert expected < 0
    np.testing.assert_allclose(grad["log_lr"], expected, rtol=2e-3)
    np.testing.assert_array_equal(new_states.step, states.step + 10)
    assert metrics.dropped == 0 and np.isclose(
        metrics.meta_loss, total_meta_loss(theta, tasks, states, 10, 1, field), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_meta_loss_train_is_the_mean_training_loss_of_the_unroll(name):
    """``meta_loss="train"``: the same unrolls, but every estimator's loss (and so its
    gradient) is the mean normalised training loss of the truncation, not the validation one."""
    estimator, theta = ESTIMATORS[name], lr(-3.0)
    tasks, _ = sample_population(FAMILY, 3, 4)
    states = estimator.init_states(PROBLEM, theta, tasks, jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    on_valid = estimator.estimate(PROBLEM, theta, tasks, states, key)
    on_train = estimator.estimate(dataclasses.replace(PROBLEM, meta_loss="train"), theta, tasks,
                                  states, key)
    np.testing.assert_allclose(on_train.metrics.train_loss, on_valid.metrics.train_loss,
                               rtol=1e-6)  # the same unrolls
    np.testing.assert_allclose(on_train.metrics.meta_loss, on_train.metrics.train_loss,
                               rtol=1e-6)
    assert abs(float(on_valid.metrics.meta_loss - on_train.metrics.meta_loss)) > 1e-3
    assert float(on_valid.grad["log_lr"]) != float(on_train.grad["log_lr"])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_meta_loss_mean_averages_the_training_and_validation_objectives(name):
    """``meta_loss="mean"``: the same unrolls and perturbations, so both the meta-loss and the
    estimate (linear in the losses) are the means of the ``train`` and ``valid`` ones."""
    estimator, theta = ESTIMATORS[name], lr(-3.0)
    tasks, _ = sample_population(FAMILY, 3, 4)
    states = estimator.init_states(PROBLEM, theta, tasks, jax.random.PRNGKey(1))
    out = {m: estimator.estimate(dataclasses.replace(PROBLEM, meta_loss=m), theta, tasks, states,
                                 jax.random.PRNGKey(2)) for m in META_LOSSES}
    np.testing.assert_allclose(
        out["mean"].metrics.meta_loss,
        0.5 * (out["train"].metrics.meta_loss + out["valid"].metrics.meta_loss), rtol=1e-5)
    np.testing.assert_allclose(out["mean"].grad["log_lr"],
                               0.5 * (out["train"].grad["log_lr"] + out["valid"].grad["log_lr"]),
                               rtol=1e-4, atol=1e-7)
    assert float(out["train"].grad["log_lr"]) != float(out["valid"].grad["log_lr"])


def test_the_heldout_loss_measures_the_configured_meta_loss():
    from lopt_cli.inner.curves import learned_curves

    def heldout(meta_loss):
        return HeldOutEvaluator(FAMILY, LearnedLRSGD(), every=1, num_tasks=2, horizon=40,
                                num_seeds=2, meta_loss=meta_loss)

    theta = lr(-3.0)
    losses = {m: heldout(m)(theta) for m in META_LOSSES}
    evaluator = heldout("valid")
    curves = [learned_curves(LearnedLRSGD(), theta, task, evaluator.task_keys(i), 40, 5)
              for i, task in enumerate(evaluator.tasks)]
    for meta_loss, field in (("valid", "valid_loss"), ("train", "train_loss")):
        expected = np.mean([np.asarray(getattr(c, field))[:, -1] for c in curves])
        assert losses[meta_loss] == pytest.approx(float(expected), rel=1e-5)
    assert losses["train"] != pytest.approx(losses["valid"], rel=1e-3)
    assert losses["mean"] == pytest.approx(0.5 * (losses["train"] + losses["valid"]), rel=1e-5)


def test_an_unknown_meta_loss_is_refused():
    with pytest.raises(ValueError, match="meta_loss='test'"):
        dataclasses.replace(PROBLEM, meta_loss="test")


def test_pes_is_unbiased_over_the_whole_unroll_where_truncated_es_is_not():
    """Short-horizon bias: from a fresh start, over K truncations of T steps, a larger step size
    also helps every *later* truncation. PES sees that; truncated ES (and TBPTT) do not."""
    truncation, num_truncations, groups = 5, 8, 64  # 512 tasks in 64 groups of 8
    theta = lr(-3.5)
    tasks, states = fresh_population(groups * 8, theta)
    full = central_difference(
        lambda th: total_meta_loss(th, tasks, states, truncation, num_truncations), theta)

    pes = PersistentES(sigma=0.01, truncation_length=truncation)
    zeros = {"log_lr": jnp.zeros(states.step.shape)}
    pes_sums = summed_estimates(pes, theta, tasks, PESState(states, states, zeros),
                                num_truncations, groups)
    pes_mean, pes_se = pes_sums.mean(), pes_sums.std(ddof=1) / np.sqrt(groups)
    assert abs(pes_mean - full) < 4 * pes_se, (pes_mean, pes_se, full)
    assert pes_se < 0.1 * abs(full)  # the test has the power to see a bias

    es = AntitheticES(sigma=0.01, truncation_length=truncation)
    es_sums = summed_estimates(es, theta, tasks, states, num_truncations, groups)
    es_mean, es_se = es_sums.mean(), es_sums.std(ddof=1) / np.sqrt(groups)
    assert abs(es_mean - full) > 6 * es_se, (es_mean, es_se, full)
    assert abs(es_mean) < 0.8 * abs(full)  # truncated ES underestimates the step-size gain

    # What truncated ES does estimate: the sum of the truncated (greedy) gradients, which
    # TBPTT computes exactly.
    greedy = summed_estimates(TruncatedBackprop(truncation), theta, tasks, states,
                              num_truncations, groups).mean()
    assert abs(es_mean - greedy) < 4 * es_se, (es_mean, es_se, greedy)


def test_pes_accumulator_zeroes_on_reset():
    theta = lr(-3.0)
    tasks, states = fresh_population(16, theta)
    pes, key = ESTIMATORS["pes"], jax.random.PRNGKey(7)
    zero = {"log_lr": jnp.zeros(16)}
    _, from_zero, _ = pes.estimate(PROBLEM, theta, tasks, PESState(states, states, zero), key)

    done = jnp.arange(16) % 2 == 0  # these tasks reached their horizon
    finished = states._replace(step=jnp.where(done, states.horizon, 3),
                               train_loss=jnp.ones(16))
    junk = {"log_lr": jnp.full(16, 5.0)}
    _, after, metrics = pes.estimate(PROBLEM, theta, tasks, PESState(finished, finished, junk),
                                     key)
    assert metrics.resets == 8
    delta = np.asarray(from_zero.accumulated["log_lr"])  # this truncation's perturbations
    np.testing.assert_allclose(after.accumulated["log_lr"], np.where(done, delta, 5.0 + delta),
                               rtol=1e-6)
    np.testing.assert_array_equal(after.pos.step, np.where(done, 10, 13))
    np.testing.assert_array_equal(after.pos.horizon, after.neg.horizon)


def test_pes_restarts_both_particles_from_the_same_state():
    theta = lr(-3.0)
    tasks, states = fresh_population(2, theta)
    task = jax.tree_util.tree_map(lambda x: x[0], tasks)
    state = jax.tree_util.tree_map(lambda x: x[0], states)._replace(
        step=jnp.asarray(7), train_loss=jnp.asarray(1.0))
    broken = state._replace(params={"x": jnp.full_like(state.params["x"], jnp.nan)})
    pair = PESState(pos=state, neg=broken, accumulated={"log_lr": jnp.asarray(0.3)})
    new, was_reset, diverged = reset_pair(PROBLEM, theta, task, pair, jax.random.PRNGKey(3))
    assert was_reset and diverged and new.accumulated["log_lr"] == 0
    assert int(new.pos.step) == 0
    for a, b in zip(jax.tree_util.tree_leaves(new.pos), jax.tree_util.tree_leaves(new.neg)):
        np.testing.assert_array_equal(a, b)

    healthy = PESState(pos=state, neg=state, accumulated={"log_lr": jnp.asarray(0.3)})
    same, was_reset, _ = reset_pair(PROBLEM, theta, task, healthy, jax.random.PRNGKey(3))
    assert not was_reset and same.accumulated["log_lr"] == pytest.approx(0.3)
    assert int(same.pos.step) == 7


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("step_size", [1.5, 20.0])
def test_diverging_tasks_never_poison_the_gradient(name, step_size):
    """Step size 1.5: the bowls of condition number above 4/3 overflow while the flattest still
    learn (and drive the estimate). Step size 20: every bowl overflows within a truncation, and
    TBPTT meets non-finite per-task gradients that it must drop."""
    estimator, theta = ESTIMATORS[name], lr(np.log(step_size))
    config = FAMILY.sample(task_key(3))
    tasks = stack_tasks([
        FAMILY.build(dataclasses.replace(config, condition_number=float(c), seed=i))
        for i, c in enumerate(np.geomspace(1.0, 10.0, 16))
    ])
    states = estimator.init_states(PROBLEM, theta, tasks, jax.random.PRNGKey(1))
    diverged, dropped, grads = 0, 0, []
    for step in range(4):
        grad, states, metrics = estimator.estimate(PROBLEM, theta, tasks, states,
                                                   jax.random.PRNGKey(step))
        assert np.isfinite(grad["log_lr"]), (name, step)
        assert np.isfinite(metrics.meta_loss)
        diverged += int(metrics.diverged)
        dropped += int(metrics.dropped)
        grads.append(float(grad["log_lr"]))
    assert diverged > 0  # the divergence path was exercised
    if step_size < 2:
        assert max(abs(g) for g in grads) > 0.1  # healthy tasks still drive the estimate
    elif name == "tbptt":
        assert dropped > 0


@pytest.mark.parametrize("option", group_options("estimator"))
def test_every_estimator_config_builds_and_round_trips_its_state(option):
    """Conformance over the real ``estimator`` group: the outer loop can feed states back."""
    cfg = compose_config("meta_train", [f"estimator={option}", "compute.truncation_length=10"])
    estimator = build(cfg.estimator, option)
    assert isinstance(estimator, GradientEstimator)
    assert estimator.truncation_length == 10 and estimator.unrolls_per_task >= 1
    theta = lr(-3.0)
    tasks, _ = sample_population(FAMILY, 3, 16)
    states = estimator.init_states(PROBLEM, theta, tasks, jax.random.PRNGKey(0))
    out = estimator.estimate(PROBLEM, theta, tasks, states, jax.random.PRNGKey(1))
    assert isinstance(out, EstimatorOutput) and isinstance(out.metrics, EstimatorMetrics)
    grad, new_states, metrics = out
    assert jax.tree_util.tree_structure(grad) == jax.tree_util.tree_structure(theta)
    assert jax.tree_util.tree_structure(new_states) == jax.tree_util.tree_structure(states)
    for old, new in zip(jax.tree_util.tree_leaves(states), jax.tree_util.tree_leaves(new_states)):
        assert old.shape == new.shape and old.dtype == new.dtype
    assert all(isinstance(v, jax.Array) and v.shape == () for v in metrics)  # still on device


def test_an_object_without_the_estimator_contract_is_a_user_error():
    assert checked_estimator(ESTIMATORS["pes"]) is ESTIMATORS["pes"]
    with pytest.raises(LoptUserError, match="QuadraticFamily is not a gradient estimator"):
        checked_estimator(FAMILY)


def test_finite_mean_drops_non_finite_pairs_and_counts_them():
    weights = jnp.asarray([1.0, jnp.nan, 2.0, 3.0])
    vectors = {"a": jnp.asarray([[1.0, 1.0], [5.0, 5.0], [2.0, jnp.inf], [1.0, 0.0]]),
               "b": jnp.asarray([1.0, 2.0, 3.0, 4.0])}
    mean, dropped = finite_mean(weights, vectors)  # pairs 1 (weight) and 2 (vector) dropped
    assert int(dropped) == 2
    np.testing.assert_allclose(mean["a"], [2.0, 0.5])
    np.testing.assert_allclose(mean["b"], 6.5)

    finite = jnp.asarray([1.0, -1.0, 2.0, 3.0])  # nothing dropped: the plain mean, exactly
    mean, dropped = finite_mean(finite, vectors["b"])
    assert int(dropped) == 0 and mean == jnp.tensordot(finite, vectors["b"], axes=1) / 4
    mean, dropped = finite_mean(jnp.full(4, jnp.nan), vectors)
    assert int(dropped) == 4 and float(mean["b"]) == 0.0


@struct.dataclass
class ScaledBowl:
    """A bowl whose loss is multiplied by ``scale`` and normalised without a ceiling: scale 0 is
    a task whose loss is 0 whatever θ does (its pair contributes exactly nothing), NaN a task
    whose pair is not finite."""

    bowl: QuadraticTask
    scale: jax.Array

    def init(self, key):
        return self.bowl.init(key)

    def sample_batch(self, key, split):
        return self.bowl.sample_batch(key, split)

    def loss(self, params, batch, key):
        return self.scale * self.bowl.loss(params, batch, key)

    def normalize(self, loss):
        return loss / self.bowl.loss_scale


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_drops_a_non_finite_pair_the_same_way(name):
    """One NaN policy: with member 3 of 8 non-finite, the estimate is the mean over the 7 others
    (so 8/7 of the estimate where member 3 contributes exactly zero) and one pair is counted as
    dropped, for ES, PES and TBPTT alike."""
    estimator, theta, num_tasks, bad = ESTIMATORS[name], lr(-3.0), 8, 3
    bowls, _ = sample_population(FAMILY, 3, num_tasks)

    def population(value):
        return ScaledBowl(bowls, jnp.ones(num_tasks).at[bad].set(value))

    states = estimator.init_states(PROBLEM, theta, population(0.0), jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    silent = estimator.estimate(PROBLEM, theta, population(0.0), states, key)
    broken = estimator.estimate(PROBLEM, theta, population(jnp.nan), states, key)
    assert int(silent.metrics.dropped) == 0 and int(broken.metrics.dropped) == 1
    assert float(silent.grad["log_lr"]) != 0.0 and np.isfinite(broken.grad["log_lr"])
    np.testing.assert_allclose(broken.grad["log_lr"] * (num_tasks - 1),
                               silent.grad["log_lr"] * num_tasks, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_reports_the_same_metrics_to_on_step(name):
    rows = []
    meta_train(FAMILY, PROBLEM, ESTIMATORS[name], make_outer_optimizer(warmup_steps=1),
               MetaTrainSettings(num_outer_steps=1, num_tasks=2),
               on_step=lambda step, metrics, theta: rows.append(metrics))
    assert set(rows[0]) == set(EstimatorMetrics._fields) | {"grad_norm", "max_horizon",
                                                            "task_ids", "skipped_update"}
    assert all(isinstance(rows[0][field], float) for field in EstimatorMetrics._fields)


def test_antithetic_pairs_unroll_each_particle_from_its_own_state():
    """``unroll_antithetic`` (a vmap over tasks of a vmap over the sign) equals unrolling the
    positive particles with theta + delta and the negative ones with theta - delta apart."""
    from lopt_cli.meta.es import unroll_antithetic

    theta = lr(-2.0)
    tasks, pos = fresh_population(3, theta)
    neg = jax.tree_util.tree_map(lambda x: x, pos)._replace(
        params=jax.tree_util.tree_map(lambda x: 0.5 * x, pos.params))
    delta = {"log_lr": jnp.asarray([0.3, -0.2, 0.1], jnp.float32)}
    new_pos, new_neg, metrics = unroll_antithetic(PROBLEM, theta, delta, tasks, pos, neg, 10)
    assert metrics.valid_loss.shape == (3, 2, 2)
    apart = jax.vmap(PROBLEM.unroll, in_axes=(0, 0, 0, None))
    for sign, start, got, column in ((1.0, pos, new_pos, 0), (-1.0, neg, new_neg, 1)):
        thetas = {"log_lr": theta["log_lr"] + sign * delta["log_lr"]}
        want_states, want_metrics = apart(thetas, tasks, start, 10)
        # Batched and apart, the sums may be ordered differently (1e-6 apart at -O0); a
        # particle unrolled with the other sign's θ would be off by far more.
        np.testing.assert_allclose(metrics.valid_loss[:, column], want_metrics.valid_loss,
                                   rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want_states)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
