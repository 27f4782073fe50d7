"""Conformance of every registered optimizer (lopt_cli.optimizers.registry), plus the
learned-optimizer checks: meta-gradients flow to theta, traced horizons, derived feature counts.

Honesty note: an *untrained* learned optimizer steps in a direction unrelated to descent, so for
learned optimizers the quadratic test only checks that steps stay small and the loss bounded;
that the architecture *can* descend (and that its sign convention is right) is checked with
hand-set weights that make MLPLOpt output the normalised gradient.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tests_support import perturbed

from lopt_cli.optimizers import baselines
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers.base import LearnedOptimizer
from lopt_cli.optimizers.mlp_lopt import MLPLOpt
from lopt_cli.optimizers.per_tensor import PerTensorLOpt
from lopt_cli.optimizers.registry import LEARNED_OPTIMIZERS as REGISTERED_LEARNED
from lopt_cli.optimizers.registry import OPTIMIZERS as REGISTERED

LEARNED_OPTIMIZERS = REGISTERED_LEARNED
OPTIMIZERS = REGISTERED

DTYPES = [jnp.float32, jnp.bfloat16]
TARGET = {"w": 1.0, "b": -0.5, "s": 2.0}


def make_params(dtype=jnp.float32):
    w = 0.3 * jax.random.normal(jax.random.key(1), (8, 4))
    return {"w": w.astype(dtype), "b": jnp.zeros((4,), dtype), "s": jnp.asarray(0.5, dtype)}


def quadratic(params):
    """0.5 * sum (p - target)^2 over every tensor, computed in float32."""
    return sum(0.5 * jnp.sum(jnp.square(p.astype(jnp.float32) - TARGET[k]))
               for k, p in params.items())


def float_leaves_finite(tree) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in leaves)


def shapes_and_dtypes(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def train(opt, params, num_steps: int):
    """``num_steps`` of ``opt`` on the quadratic in one ``lax.scan``; returns losses, max |step|."""

    def step(carry, _):
        p, state = carry
        loss, grads = jax.value_and_grad(quadratic)(p)
        updates, state = opt.update(grads, state, p, loss=loss, valid_loss=loss)
        largest = jnp.max(jnp.stack([jnp.max(jnp.abs(u.astype(jnp.float32)))
                                     for u in jax.tree.leaves(updates)]))
        return (optax.apply_updates(p, updates), state), (loss, largest)

    (params, _), (losses, largest) = jax.lax.scan(step, (params, opt.init(params)), None,
                                                  num_steps)
    return jnp.append(losses, quadratic(params)), largest


# ------------------------------------------------------------------ every optimizer


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_jit_finite_shapes_dtypes_and_stable_state(name, dtype):
    opt = OPTIMIZERS[name]()
    params = make_params(dtype)
    init = jax.jit(opt.init)
    update = jax.jit(opt.update)
    state = init(params)
    first_structure = jax.tree.structure(state)
    first_layout = shapes_and_dtypes(state)
    for _ in range(3):
        loss, grads = jax.value_and_grad(quadratic)(params)
        updates, state = update(grads, state, params, loss=loss, valid_loss=loss + 0.1)
        assert shapes_and_dtypes(updates) == shapes_and_dtypes(params)
        assert jax.tree.structure(state) == first_structure
        assert shapes_and_dtypes(state) == first_layout
        assert float_leaves_finite(updates) and float_leaves_finite(state)
        params = optax.apply_updates(params, updates)
        assert shapes_and_dtypes(params) == shapes_and_dtypes(make_params(dtype))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_extra_args_are_optional_and_accepted(name):
    opt = OPTIMIZERS[name]()
    params = make_params()
    state = opt.init(params)
    grads = jax.grad(quadratic)(params)
    update = jax.jit(opt.update)
    plain, _ = update(grads, state, params)
    with_loss, _ = update(grads, state, params, loss=jnp.float32(3.0),
                          valid_loss=jnp.float32(jnp.nan))  # no valid loss yet
    assert float_leaves_finite(plain) and float_leaves_finite(with_loss)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_quadratic_over_100_steps(name):
    losses, largest = jax.jit(lambda p: train(OPTIMIZERS[name](), p, 100))(make_params())
    assert bool(jnp.all(jnp.isfinite(losses)))
    if name in LEARNED_OPTIMIZERS:  # untrained: small steps, loss bounded, no blow-up
        assert float(jnp.max(largest)) < 0.05
        assert float(losses[-1]) < 1.5 * float(losses[0])
    else:  # Adam at its default 1e-3 moves each coordinate by at most ~0.1 in 100 steps
        assert float(losses[-1]) < FINAL_FRACTION.get(name, 0.9) * float(losses[0])
        assert float(jnp.mean(jnp.diff(losses) < 0)) > 0.9


# Muon's orthogonalised step has an RMS of 0.2 × its rate per matrix (about an Adam step's on
# noisy gradients), a fifth of Adam's on this noise-free quadratic: at the same 1e-3 its matrix
# moves 5x less in 100 steps; so do ``lazy_muon``'s, ``sinkhorn``'s and ``dion``'s (at an eighth
# of the rank too: 0.95 of the first loss after 100 steps).
FINAL_FRACTION = {"muon": 0.98, "lazy_muon": 0.98, "sinkhorn": 0.98, "dion": 0.98,
                  "dion_low_rank": 0.98}


# ------------------------------------------------------------------ learned optimizers


def unrolled_loss(lopt: LearnedOptimizer, theta, num_steps, params, length: int = 5):
    """Mean training loss over a ``length``-step unroll: the truncated-backprop meta-loss."""
    losses, _ = train(lopt.transform(theta, num_steps), params, length)
    return jnp.mean(losses)


# Run with the slow tests (make test-slow), to keep make test near 10 minutes on 2 cores: celo's
# meta-gradient compiles for ~40 s, hierarchical's and small's for 10-20 s; adam_nominal's
# variants (two moments, learned decay, the balanced direction) send the meta-gradient through
# adam_nominal's network, which the fast suite checks for adam_nominal and muon_nominal.
SLOW_META_GRADIENT = {"celo", "hierarchical", "small", "adam_nominal_two_moments",
                      "adam_nominal_learned_decay", "balanced_nominal"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow)
                                  if name in SLOW_META_GRADIENT else name
                                  for name in sorted(LEARNED_OPTIMIZERS)])
def test_meta_gradients_flow_to_theta(name):
    """Every leaf of theta gets a non-zero meta-gradient, at a slightly perturbed theta: an
    output layer that starts at zero (adam_nominal's, the learned schedules') blocks the
    gradient of the layers before it at exactly the initial theta, by design."""
    lopt = LEARNED_OPTIMIZERS[name]()
    theta = perturbed(lopt.init(jax.random.key(0)), scale=0.01)
    meta_grad = jax.jit(jax.grad(unrolled_loss, argnums=1), static_argnums=0)(
        lopt, theta, jnp.int32(50), make_params())
    assert jax.tree.structure(meta_grad) == jax.tree.structure(theta)
    assert float_leaves_finite(meta_grad)
    norms = jax.tree.map(lambda g: float(jnp.linalg.norm(g)), meta_grad)
    assert all(n > 0 for n in jax.tree.leaves(norms)), norms


@pytest.mark.parametrize("name", sorted(LEARNED_OPTIMIZERS))
def test_traced_horizon_and_perturbed_theta_under_vmap(name):
    """ES vmaps over perturbed theta; the problem vmaps over tasks with different horizons."""
    lopt = LEARNED_OPTIMIZERS[name]()
    theta = lopt.init(jax.random.key(0))
    horizons = jnp.asarray([10, 100, 1000], jnp.int32)
    noise = jax.tree.map(lambda x: 0.01 * jnp.ones((3,) + x.shape, x.dtype), theta)
    thetas = jax.tree.map(lambda t, n: t + n * jnp.asarray([-1.0, 0.0, 1.0]).reshape(
        (3,) + (1,) * t.ndim), theta, noise)
    run = jax.jit(jax.vmap(functools.partial(unrolled_loss, lopt), in_axes=(0, 0, None)))
    losses = run(thetas, horizons, make_params())
    assert losses.shape == (3,) and bool(jnp.all(jnp.isfinite(losses)))


# ------------------------------------------------------------------ MLPLOpt specifics


def test_mlp_feature_count_is_derived_from_feature_functions():
    for decays in [(0.9,), (0.5, 0.99), (0.5, 0.9, 0.99, 0.999, 0.9999)]:
        lopt = MLPLOpt(decays=decays)
        widths = feats.feature_widths(decays)
        assert lopt.num_features == sum(widths.values()) == feats.num_features(decays)
        kernels = lopt.init(jax.random.key(0))["params"]
        assert kernels["param_in"]["kernel"].shape[0] == feats.num_param_features(decays)
        assert kernels["tensor_in"]["kernel"].shape[0] == feats.num_tensor_features()
    # Each extra decay adds one momentum, rms, 1/sqrt(rms) and m/sqrt(rms) column.
    assert feats.num_features((0.5, 0.9)) - feats.num_features((0.5,)) == 4
    short = MLPLOpt(decays=(0.9, 0.99), hidden_sizes=(8,))
    opt = short.transform(short.init(jax.random.key(0)), 10)
    params = make_params()
    state = opt.init(params)
    assert state.momentum["w"].shape == (2, 8, 4)
    updates, _ = jax.jit(opt.update)(jax.grad(quadratic)(params), state, params)
    assert shapes_and_dtypes(updates) == shapes_and_dtypes(params)


def test_mlp_state_layout_and_hashability():
    lopt = MLPLOpt()
    assert lopt == MLPLOpt(decays=[0.5, 0.9, 0.99, 0.999, 0.9999]) and hash(lopt) == hash(
        MLPLOpt())
    params = make_params(jnp.bfloat16)
    state = lopt.transform(lopt.init(jax.random.key(0)), 10).init(params)
    assert state.momentum["w"].shape == (5, 8, 4) and state.rms["s"].shape == (5,)
    assert state.momentum["w"].dtype == jnp.float32 and state.count.dtype == jnp.int32


def normalised_gradient_theta(lopt: MLPLOpt):
    """Weights for which the MLP outputs d = g / rms(g) and magnitude 0: normalised SGD."""
    theta = jax.tree.map(jnp.zeros_like, lopt.init(jax.random.key(0)))
    grad_column = list(feats.feature_widths(lopt.decays)).index("grad")  # first rows
    p = theta["params"]
    p["param_in"]["kernel"] = p["param_in"]["kernel"].at[grad_column, :2].set(
        jnp.asarray([1.0, -1.0]))
    p["dense_1"]["kernel"] = p["dense_1"]["kernel"].at[0, 0].set(1.0).at[1, 1].set(1.0)
    p["dense_2"]["kernel"] = p["dense_2"]["kernel"].at[0, 0].set(1.0).at[1, 0].set(-1.0)
    return theta


def test_mlp_can_represent_descent_with_the_right_sign():
    lopt = MLPLOpt(step_mult=1e-2)
    opt = lopt.transform(normalised_gradient_theta(lopt), 100)
    losses, _ = jax.jit(lambda p: train(opt, p, 100))(make_params())
    assert float(losses[-1]) < 0.5 * float(losses[0])
    assert bool(jnp.all(jnp.diff(losses[:20]) < 0))


def test_mlp_blocks_of_parameters_match_one_block():
    """Blocks of 7 parameters (the last one overlapping) give the same steps and meta-gradients."""
    params = make_params()
    grads = jax.grad(quadratic)(params)
    theta = MLPLOpt().init(jax.random.key(0))

    def first_step_loss(chunk_size, theta):
        opt = MLPLOpt(chunk_size=chunk_size).transform(theta, 20)
        updates, _ = opt.update(grads, opt.init(params), params)
        return quadratic(optax.apply_updates(params, updates))

    (loss_a, grad_a), (loss_b, grad_b) = (
        jax.jit(jax.value_and_grad(functools.partial(first_step_loss, c)))(theta) for c in (0, 7))
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9),
                 grad_a, grad_b)


def randomized(theta, seed: int = 3):
    """``theta`` with every variable replaced by N(0, 0.5^2) noise (no zero biases, so every
    variable matters in the comparison)."""
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("name", sorted(LEARNED_OPTIMIZERS))
def test_fast_paths_equal_the_plain_network(name):
    """The network that is defined is the network that runs: every fast path the optimizer
    runs (feature-major, fused, channel-wise) equals the module's plain evaluation (flax
    ``Dense``/``LSTMCell`` on row-major features) on the same, random, theta."""
    lopt = LEARNED_OPTIMIZERS[name]()
    assert isinstance(lopt, PerTensorLOpt)
    theta = randomized(lopt.init(jax.random.key(0)))
    paths = lopt.network_paths(jax.random.key(1))
    assert paths, f"{name} declares no fast path"
    for path in paths:
        got = lopt.network.apply(theta, *path.args, method=path.fast)
        want = lopt.network.apply(theta, *path.args, method=path.reference)
        assert jax.tree.structure(got) == jax.tree.structure(want), path.name
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.shape == b.shape, path.name
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=path.name)


@pytest.mark.parametrize("name", sorted(LEARNED_OPTIMIZERS))
def test_a_renamed_or_missing_layer_is_an_error(name):
    """Layer names are the module's: theta with a layer renamed (or dropped) never runs as a
    shallower network."""
    lopt = LEARNED_OPTIMIZERS[name]()
    theta = lopt.init(jax.random.key(0))
    layers = dict(theta["params"])
    assert set(layers) == set(lopt.network.layer_names())
    victim = lopt.network.layer_names()[-1]  # the last layer: once silently skipped
    renamed = {"params": {**{k: v for k, v in layers.items() if k != victim},
                          victim + "_renamed": layers[victim]}}
    dropped = {"params": {k: v for k, v in layers.items() if k != victim}}
    params = make_params()
    grads = jax.grad(quadratic)(params)
    for bad in (renamed, dropped):
        opt = lopt.transform(bad, 10)
        with pytest.raises(ValueError, match=victim):
            opt.update(grads, opt.init(params), params, loss=jnp.float32(1.0))


def test_every_learned_optimizer_validates_its_fields_in_one_line():
    from lopt_cli.errors import LoptUserError

    for factory, field, bad in [(MLPLOpt, "decays", (1.5,)), (MLPLOpt, "chunk_size", -1),
                                (LEARNED_OPTIMIZERS["hierarchical"], "lstm_hidden", 0),
                                (LEARNED_OPTIMIZERS["small"], "rms_decay", 1.0),
                                (LEARNED_OPTIMIZERS["small"], "hidden_sizes", ())]:
        with pytest.raises(LoptUserError, match=f"{field}=") as error:
            factory(**{field: bad})
        assert "\n" not in str(error.value) and "must be" in str(error.value)


def test_feature_rows_are_stacked_in_declared_order():
    ctx = feats.ParamContext(jnp.arange(3.0), 10 + jnp.arange(3.0), jnp.ones((2, 3)),
                             2 * jnp.ones((2, 3)))
    x = feats.raw_param_features(ctx)
    rows = feats.param_feature_rows((0.5, 0.9))
    assert x.shape == (sum(feats.feature_widths((0.5, 0.9))[n] for n in rows), 3)
    np.testing.assert_array_equal(x[rows["grad"]], ctx.grad[None])
    np.testing.assert_array_equal(x[rows["param"]], ctx.param[None])
    np.testing.assert_array_equal(x[rows["momentum"]], ctx.momentum)
    np.testing.assert_allclose(x[rows["rsqrt_rms"]], 2 ** -0.5 * jnp.ones((2, 3)), rtol=1e-6)


def test_param_features_are_second_moment_normalised():
    key = jax.random.split(jax.random.key(3), 4)
    ctx = feats.ParamContext(jax.random.normal(key[0], (5, 3)), jax.random.normal(key[1], (5, 3)),
                             jax.random.normal(key[2], (2, 5, 3)),
                             jnp.abs(jax.random.normal(key[3], (2, 5, 3))))
    x = feats.param_features(ctx)
    np.testing.assert_allclose(x, feats.second_moment_normalize(feats.raw_param_features(ctx)),
                               rtol=1e-5)
    np.testing.assert_allclose(jnp.mean(jnp.square(x), axis=(1, 2)), 1.0, rtol=1e-4)


def test_gradient_clipping_against_running_rms():
    g = jnp.asarray([1.0, -1.0, 100.0])
    clipped, mean_sq = feats.clip_by_running_rms(g, jnp.float32(0.0), jnp.int32(0), 10.0, 0.9)
    np.testing.assert_allclose(clipped, g)  # first step: nothing to clip against
    clipped, _ = feats.clip_by_running_rms(g, jnp.float32(0.1), jnp.int32(1), 2.0, 0.9)
    np.testing.assert_allclose(clipped, [1.0, -1.0, 2.0], rtol=1e-6)  # bound 2*sqrt(0.1/0.1)
    assert float(mean_sq) > 0


# ------------------------------------------------------------------ baselines


def test_adam_grid_vmaps_over_traced_learning_rates():
    grid = baselines.adam_lr_grid()
    assert grid.shape == (7,) and np.isclose(grid[0], 1e-4) and np.isclose(grid[-1], 1e-1)
    assert np.allclose(np.diff(np.log(grid)), np.log(10) / 2, rtol=1e-4)
    final = jax.jit(jax.vmap(lambda lr: train(baselines.adam_with_lr(lr), make_params(), 50)[0]
                             [-1]))(jnp.asarray(grid))
    assert final.shape == (7,) and bool(jnp.all(jnp.isfinite(final)))
    assert float(final[-1]) < float(final[0])  # larger rates get further in 50 steps
