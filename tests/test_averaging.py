"""``average_theta``: a run publishes a running average of θ (lopt_cli/meta/averaging.py).

The average must be the closed-form EMA of the raw θ trajectory, must not change that
trajectory, must survive a checkpoint round trip bit for bit, and a CLI run must save the
average as its learned optimizer and the raw last θ into ``last/``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization
from tests_support import compose_config
from toy_lopt import LearnedLRSGD

from lopt_cli.meta.averaging import (
    AveragedState,
    check_decay,
    published_theta,
    with_parameter_average,
)
from lopt_cli.meta.checkpoint import load_checkpoint, save_checkpoint
from lopt_cli.meta.outer import MetaTrainSettings, make_outer_optimizer, meta_train, outer_update
from lopt_cli.meta.pes import PersistentES
from lopt_cli.meta.problem import TruncatedProblem
from task_definitions.quadratic import QuadraticFamily

FAMILY = QuadraticFamily(dims=(8,), condition_number=(1.0, 10.0), noise=(0.0,))
PROBLEM = TruncatedProblem(LearnedLRSGD(), min_horizon=20, max_horizon=60, valid_every=5)
ESTIMATOR = PersistentES(sigma=0.05, truncation_length=10)
SETTINGS = MetaTrainSettings(num_outer_steps=8, num_tasks=2, resample_every=4, seed=3,
                             checkpoint_every=1)
DECAY = 0.6


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def same(a, b) -> bool:
    """Whether two trees' leaves are equal bit for bit."""
    left, right = leaves(a), leaves(b)
    return len(left) == len(right) and all(np.array_equal(x, y) for x, y in zip(left, right))


def test_the_average_is_the_closed_form_ema_and_the_updates_are_unchanged():
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    grads = [{"w": jnp.array([0.3, -0.1]) * k, "b": jnp.array(0.2 * k)} for k in (1, -2, 3)]
    plain, averaged = optax.sgd(0.1), with_parameter_average(optax.sgd(0.1), 0.5)
    state, expected = averaged.init(params), params
    for grad in grads:
        updates, state = averaged.update(grad, state, params)
        reference, _ = plain.update(grad, plain.init(params), params)
        assert same(updates, reference)
        params = optax.apply_updates(params, updates)
        expected = jax.tree_util.tree_map(lambda a, p: 0.5 * a + 0.5 * p, expected, params)
    assert isinstance(state, AveragedState)
    for got, want in zip(leaves(published_theta(state, params)), leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert published_theta(plain.init(params), params) is params


def test_zero_decay_is_the_outer_optimizer_itself_and_bad_decays_are_refused():
    tx = optax.sgd(0.1)
    assert with_parameter_average(tx, 0.0) is tx
    for bad in (1.0, -0.1, 1.5, True, "0.9", float("nan")):
        with pytest.raises(ValueError, match="average_theta"):
            check_decay(bad)


def test_a_skipped_update_leaves_the_average_as_it_was():
    params = {"w": jnp.ones(3)}
    moved = with_parameter_average(optax.sgd(0.1), 0.5)
    _, state, _, skipped = outer_update(moved, {"w": jnp.ones(3)}, moved.init(params), params,
                                        0.0)
    assert not bool(skipped) and not np.array_equal(np.asarray(state.average["w"]), np.ones(3))
    diverged = with_parameter_average(optax.sgd(jnp.inf), 0.5)
    _, state, _, skipped = outer_update(diverged, {"w": jnp.ones(3)}, diverged.init(params),
                                        params, 0.0)
    assert bool(skipped)
    np.testing.assert_array_equal(np.asarray(state.average["w"]), np.ones(3))


def run(outer_tx, start=None):
    states = {}
    theta = meta_train(FAMILY, PROBLEM, ESTIMATOR, outer_tx, SETTINGS, start=start,
                       on_checkpoint=lambda state: states.setdefault(state.step, state))
    return theta, states


def test_meta_training_publishes_the_ema_of_an_unchanged_raw_trajectory():
    base = make_outer_optimizer(learning_rate=0.1, warmup_steps=1, total_steps=8)
    plain_theta, plain_states = run(base)
    theta, states = run(with_parameter_average(base, DECAY))
    assert sorted(states) == list(range(1, 9))
    expected = PROBLEM.lopt.init(jax.random.split(jax.random.PRNGKey(SETTINGS.seed))[1])
    for step in range(1, 9):  # the raw θ is the plain run's, bit for bit
        assert same(states[step].theta, plain_states[step].theta)
        expected = jax.tree_util.tree_map(lambda a, p: DECAY * a + (1 - DECAY) * p, expected,
                                          states[step].theta)
    for got, want in zip(leaves(theta), leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert same(plain_theta, plain_states[8].theta)
    assert not same(theta, plain_theta)


def test_a_checkpointed_average_resumes_bitwise(tmp_path):
    outer_tx = with_parameter_average(
        make_outer_optimizer(learning_rate=0.1, warmup_steps=1, total_steps=8), DECAY)
    full, states = run(outer_tx)
    save_checkpoint(tmp_path, states[5], SETTINGS.seed, [{"step": i} for i in range(5)])
    start, _ = load_checkpoint(tmp_path, FAMILY, PROBLEM, ESTIMATOR, outer_tx, SETTINGS)
    assert isinstance(start.opt_state, AveragedState)
    resumed, _ = run(outer_tx, start=start)
    assert serialization.to_bytes(resumed) == serialization.to_bytes(full)


def test_a_run_saves_the_average_and_its_raw_last_theta(tmp_path):
    """Through the composed config: learned_optimizer.msgpack is the average (the summary says
    which), last/ the raw θ of the final checkpoint."""
    import json

    from lopt_cli.commands.meta_train import build_job, run_meta_training
    from lopt_cli.meta.checkpoint import read_raw
    from lopt_cli.optimizers.storage import load_learned_optimizer

    overrides = ["compute=smoke", "compute.num_outer_steps=4", "compute.num_tasks=2",
                 "task_family=quadratic", "task_family.dims=[8]", "heldout.every=0",
                 "average_theta=0.5"]
    job = build_job(compose_config("meta_train", overrides))
    assert job.average_theta == 0.5
    theta, _ = run_meta_training(job, tmp_path)
    _, saved, _ = load_learned_optimizer(tmp_path)
    _, last, _ = load_learned_optimizer(tmp_path / "last")
    assert same(saved, theta)
    raw = read_raw(tmp_path)
    assert same(last, serialization.from_state_dict(last, raw["theta"]))
    assert not same(saved, last)
    assert json.loads((tmp_path / "summary.json").read_text())["average_theta"] == 0.5
