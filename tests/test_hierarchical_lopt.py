"""Specific checks of HierarchicalLOpt (loss features, cross-tensor channel, derived feature
counts, flax LSTMCell) and SmallLOpt (state size, factored second moments). The generic
checks (jit, dtypes, meta-gradients) are in test_optimizer_conformance.py."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers import hierarchical_features as hfeats
from lopt_cli.optimizers import small_lopt
from lopt_cli.optimizers.hierarchical import HierarchicalLOpt
from lopt_cli.optimizers.hierarchical_network import HierarchicalNetwork
from lopt_cli.optimizers.small_lopt import SmallLOpt

TARGET = {"w": 1.0, "b": -0.5, "s": 2.0}


def make_params():
    w = 0.3 * jax.random.normal(jax.random.key(1), (8, 4))
    return {"w": w, "b": jnp.zeros((4,)), "s": jnp.asarray(0.5)}


def quadratic(params):
    return sum(0.5 * jnp.sum(jnp.square(p - TARGET[k])) for k, p in params.items())


@functools.cache
def jitted_update(lopt, horizon: int = 100):
    """``update(theta, grads, state, params, loss, valid_loss)``, jitted once per config."""

    def update(theta, grads, state, params, loss, valid_loss):
        return lopt.transform(theta, horizon).update(grads, state, params, loss=loss,
                                                     valid_loss=valid_loss)

    return jax.jit(update)


def run_steps(lopt, theta, params, losses, valid_losses):
    """Trains the quadratic with the given (fake) loss values; returns (params, state, steps)."""
    update = jitted_update(lopt)
    state = lopt.transform(theta, 100).init(params)
    steps = []
    for loss, valid in zip(losses, valid_losses):
        updates, state = update(theta, jax.grad(quadratic)(params), state, params,
                                jnp.float32(loss), jnp.float32(valid))
        steps.append(updates)
        params = optax.apply_updates(params, updates)
    return params, state, steps


def max_abs_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                               jax.tree.leaves(b)))


# ------------------------------------------------------------------ loss features


def test_training_loss_z_score_responds_to_a_spike():
    decays = (0.9, 0.99)
    stats = hfeats.init_loss_stats(len(decays))
    first, stats = hfeats.observe_losses(stats, 1.0, None, decays)
    assert float(first.train_available) == 0 and np.all(np.asarray(first.train_z) == 0)
    rng = np.random.default_rng(0)
    for loss in 1.0 + 0.01 * rng.standard_normal(50):
        calm, stats = hfeats.observe_losses(stats, loss, None, decays)
    assert float(calm.train_available) == 1 and np.all(np.abs(np.asarray(calm.train_z)) < 3)
    spike, after = hfeats.observe_losses(stats, 2.0, None, decays)
    np.testing.assert_allclose(spike.train_z, hfeats.LOSS_CLIP)  # far above: clipped z-score
    drop, _ = hfeats.observe_losses(stats, 0.5, None, decays)
    np.testing.assert_allclose(drop.train_z, -hfeats.LOSS_CLIP)
    # A NaN (or missing) loss is "not available" and leaves the statistics untouched.
    for bad in (jnp.nan, jnp.inf, None):
        missing, same = hfeats.observe_losses(after, bad, None, decays)
        assert float(missing.train_available) == 0 and np.all(np.asarray(missing.train_z) == 0)
        jax.tree.map(np.testing.assert_array_equal, same, after)


def test_validation_loss_feature_is_a_normalised_gap_and_handles_nan():
    decays = (0.9,)
    stats = hfeats.init_loss_stats(1)
    for loss in (1.0, 1.2, 0.8, 1.0):
        _, stats = hfeats.observe_losses(stats, loss, None, decays)
    mean, std = hfeats.loss_moments(hfeats.observe_losses(stats, 1.0, None, decays)[1])
    x, _ = hfeats.observe_losses(stats, 1.0, 1.1, decays)
    assert float(x.valid_available) == 1
    np.testing.assert_allclose(x.valid_z, (1.1 - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(x.valid_gap, (1.1 - mean) / abs(mean), rtol=1e-5)
    for missing in (jnp.nan, None):
        x, _ = hfeats.observe_losses(stats, 1.0, missing, decays)
        assert float(x.valid_available) == 0 and float(jnp.abs(x.valid_z).sum()) == 0


def test_validation_loss_changes_the_update():
    lopt = HierarchicalLOpt()
    theta = lopt.init(jax.random.key(0))
    params, state, _ = run_steps(lopt, theta, make_params(), [3.0, 2.9, 2.8], [jnp.nan] * 3)
    grads = jax.grad(quadratic)(params)
    update = jitted_update(lopt)
    steps = {v: update(theta, grads, state, params, jnp.float32(2.7), jnp.float32(v))[0]
             for v in (2.7, 4.0, jnp.nan)}
    assert all(float(jnp.all(jnp.isfinite(x))) for s in steps.values()
               for x in jax.tree.leaves(s))
    assert max_abs_diff(steps[2.7], steps[4.0]) > 1e-9  # generalisation gap is seen
    assert max_abs_diff(steps[2.7], steps[jnp.nan]) > 1e-9  # "available" flag is seen
    # (a missing valid_loss is NaN: test_validation_loss_feature_is_a_normalised_gap...)


# ------------------------------------------------------------------ architecture


def test_cross_tensor_channel_is_the_only_coupling_between_tensors():
    lopt = HierarchicalLOpt()
    theta = lopt.init(jax.random.key(0))
    params = make_params()
    update = jitted_update(lopt)

    def two_steps(theta, scale_w):
        state = lopt.transform(theta, 100).init(params)
        steps = []
        for _ in range(2):
            grads = jax.grad(quadratic)(params)
            grads["w"] = scale_w * grads["w"]
            updates, state = update(theta, grads, state, params, jnp.float32(1.0),
                                    jnp.float32(jnp.nan))
            steps.append(updates)
        return steps

    base, changed = two_steps(theta, 1.0), two_steps(theta, 3.0)
    assert float(jnp.max(jnp.abs(base[0]["b"] - changed[0]["b"]))) == 0  # no same-step path
    assert float(jnp.max(jnp.abs(base[1]["b"] - changed[1]["b"]))) > 1e-9  # via the channel
    cut = jax.tree.map(lambda x: x, theta)
    cut["params"]["to_cross"] = jax.tree.map(jnp.zeros_like, cut["params"]["to_cross"])
    base, changed = two_steps(cut, 1.0), two_steps(cut, 3.0)
    assert float(jnp.max(jnp.abs(base[1]["b"] - changed[1]["b"]))) == 0


def test_lstm_is_a_flax_lstm_cell_with_one_row_per_tensor():
    lopt = HierarchicalLOpt(lstm_hidden=16)
    theta = lopt.init(jax.random.key(0))
    assert isinstance(lopt.network.bind(theta).lstm, nn.LSTMCell)
    assert set(theta["params"]["lstm"]) == {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}
    state = lopt.transform(theta, 10).init(make_params())
    assert all(c.shape == (3, 16) for c in state.lstm_carry)
    assert state.momentum["w"].shape == (len(lopt.decays), 8, 4)


def test_feature_counts_are_derived_and_follow_the_config():
    default = HierarchicalLOpt()
    widths = hfeats.lstm_feature_widths(5, 3, 2, 8)
    assert default.num_lstm_features == sum(widths.values())
    variants = {
        "decays": HierarchicalLOpt(decays=(0.9, 0.99)),  # 3 momentum + 2 rms stats per decay
        "loss_decays": HierarchicalLOpt(loss_decays=(0.9,)),  # 1 train + 2 valid per decay
        "num_extra_outputs": HierarchicalLOpt(num_extra_outputs=5),
        "cross_size": HierarchicalLOpt(cross_size=3),
    }
    expected = {"decays": -3 * 5, "loss_decays": -3 * 2, "num_extra_outputs": 3,
                "cross_size": -5}
    for name, lopt in variants.items():
        assert lopt.num_lstm_features - default.num_lstm_features == expected[name], name
    for lopt in [default, *variants.values(), HierarchicalLOpt(lstm_to_mlp=4)]:
        p = lopt.init(jax.random.key(0))["params"]
        assert p["lstm"]["ii"]["kernel"].shape == (lopt.num_lstm_features, lopt.lstm_hidden)
        assert p["param_in"]["kernel"].shape[0] == feats.num_param_features(lopt.decays)
        assert p["tensor_in"]["kernel"].shape[0] == (feats.num_tensor_features()
                                                     + lopt.lstm_to_mlp)
        assert p["extra"]["kernel"].shape[1] == lopt.num_extra_outputs
    with pytest.raises(LoptUserError):
        HierarchicalLOpt(loss_decays=())


def test_tracked_accumulator_means_equal_the_direct_means():
    lopt = HierarchicalLOpt()
    theta = lopt.init(jax.random.key(0))
    _, state, _ = run_steps(lopt, theta, make_params(), [1.0] * 4, [jnp.nan] * 4)
    for name in ("w", "b"):
        np.testing.assert_allclose(state.moment_means[name][0],
                                   jnp.mean(state.momentum[name].reshape(5, -1), 1), rtol=1e-5)
        np.testing.assert_allclose(state.moment_means[name][1],
                                   jnp.mean(state.rms[name].reshape(5, -1), 1), rtol=1e-5)


def test_blocks_of_parameters_match_one_block():
    params = {"w": 0.1 * jax.random.normal(jax.random.key(2), (37, 3))}
    grads = jax.tree.map(lambda p: 1.0 - p, params)
    theta = HierarchicalLOpt().init(jax.random.key(0))

    def step(chunk_size):
        opt = HierarchicalLOpt(chunk_size=chunk_size).transform(theta, 20)
        return jax.jit(opt.update)(grads, opt.init(params), params, loss=1.0)

    (a, state_a), (b, state_b) = step(0), step(16)  # 111 rows: 7 blocks of 16, last shifted
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(state_a.extra_means, state_b.extra_means, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ SmallLOpt


def test_extra_head_of_the_mean_hidden_layer_is_the_mean_extra_head():
    """The optimizer feeds the LSTM the tensor mean of the extra head's per-parameter
    pre-activations; that equals the module's ``extra_outputs`` of the mean hidden layer (the
    head is linear). The fast paths themselves are checked against the plain module for every
    learned optimizer in test_optimizer_conformance.py."""
    lopt = HierarchicalLOpt()
    theta = lopt.init(jax.random.key(0))
    key = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(key[0], (lopt.num_param_features, 37))
    scales = jnp.exp(jax.random.normal(key[1], (lopt.num_param_features,)))
    tensor_x = jax.random.normal(key[2], (lopt.num_tensor_features,))
    _, _, extra = lopt.network.apply(theta, x, scales, tensor_x,
                                     method=HierarchicalNetwork.per_param_feature_major)
    _, _, hidden = lopt.network.apply(theta, (x * scales[:, None]).T, tensor_x,
                                      method="per_param")
    np.testing.assert_allclose(
        jnp.tanh(jnp.mean(extra, axis=1)),
        lopt.network.apply(theta, jnp.mean(hidden, axis=0), method="extra_outputs"),
        rtol=1e-5, atol=1e-6)


def test_small_state_floats_per_parameter_as_documented():
    lopt = SmallLOpt()
    params = {"w": jnp.zeros((256, 128)), "b": jnp.zeros((128,)), "k": jnp.zeros((3, 3, 8, 16))}
    state = lopt.transform(lopt.init(jax.random.key(0)), 10).init(params)
    floats = sum(x.size for x in jax.tree.leaves(state) if x.dtype == jnp.float32)
    m = len(lopt.momentum_decays)
    n = sum(p.size for p in params.values())
    documented = (m * n + (256 + 128) + (128 + 0) + (3 * 3 * 8 + 3 * 3 * 16)
                  + len(params))  # momenta, factored/full second moments, clipping RMS
    assert floats == documented
    assert m <= floats / n < m + 0.05  # about M = 2 floats per parameter for matrices
    assert state.v_row["w"].shape == (256,) and state.v_col["w"].shape == (128,)
    assert state.v_row["b"].shape == (128,) and state.v_col["b"].shape == (0,)
    assert 80 <= lopt.flops_per_param <= 200


def test_factored_second_moment_is_exact_for_rank_one_g_squared():
    a = jax.random.uniform(jax.random.key(0), (2, 6), minval=0.5, maxval=2.0)
    b = jax.random.normal(jax.random.key(1), (2, 5))
    g = a[:, :, None] * b[:, None, :]  # every 6x5 slice: g^2 = a^2 b^2^T is rank one
    lopt = SmallLOpt(clip_mult=0.0, rms_decay=0.9)
    theta = lopt.init(jax.random.key(0))
    opt = lopt.transform(theta, 10)
    state = opt.init({"g": g})
    for _ in range(3):  # the same gradient every step: v_hat = g^2 after bias correction
        _, state = opt.update({"g": g}, state, {"g": g})
    v_hat = small_lopt.factored_second_moment(state.v_row["g"], state.v_col["g"]) / (
        1 - 0.9**3)
    np.testing.assert_allclose(v_hat, jnp.square(g), rtol=1e-5)


def test_small_can_represent_adam_like_descent():
    """Weights that output d = m_1 / sqrt(v_hat) (Adam with a factored v): it descends."""
    lopt = SmallLOpt(step_mult=0.02)
    theta = jax.tree.map(jnp.zeros_like, lopt.init(jax.random.key(0)))
    column = [name for name, _ in small_lopt.SMALL_FEATURES].index("momentum")  # grad: 1 col
    p = theta["params"]
    p["param_in"]["kernel"] = p["param_in"]["kernel"].at[column, :2].set(
        jnp.asarray([1.0, -1.0]))
    p["out"]["kernel"] = p["out"]["kernel"].at[0, 0].set(1.0).at[1, 0].set(-1.0)
    opt = lopt.transform(theta, 100)
    params = make_params()
    state = opt.init(params)
    update = jax.jit(opt.update)
    losses = []
    for _ in range(60):
        losses.append(float(quadratic(params)))
        updates, state = update(jax.grad(quadratic)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert losses[-1] < 0.3 * losses[0] and all(np.diff(losses[:10]) < 0)
