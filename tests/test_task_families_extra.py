"""Family-specific maths checks (the generic contract is in ``test_task_families.py``)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests_support import compose_config

from task_definitions import functions2d as f2d
from task_definitions.autoencoder import AutoencoderConfig, build_autoencoder
from task_definitions.conv import ConvConfig, build_conv_classifier, image_arrays
from task_definitions.flow import FlowConfig, build_flow, make_mixture
from task_definitions.vae import VAEConfig, build_vae, gaussian_kl

KEY = jax.random.PRNGKey(0)


# --- 2-D test functions -------------------------------------------------------------------------


def build_2d(function: str, start=(0.5, -1.5), noise: float = 0.0, scale: float = 1.0):
    return f2d.build_functions2d(f2d.Functions2DConfig(function, scale, noise, 0.0, 0, start))


@pytest.mark.parametrize("function", f2d.FUNCTION_NAMES)
def test_known_minimum_has_zero_loss_and_gradient(function):
    task = build_2d(function)
    xy = jnp.asarray(f2d.KNOWN_MINIMA[function], jnp.float32)
    batch = task.sample_batch(KEY, "test")
    loss, grad = jax.value_and_grad(task.loss)({"xy": xy}, batch, KEY)
    assert abs(float(loss)) < 1e-3
    assert float(jnp.linalg.norm(grad["xy"])) < 1e-2
    assert float(task.normalize(loss)) < 0.05
    # Elsewhere the loss is positive, the start normalises to 1 and NaN to the ceiling.
    start_loss = task.loss(task.init(KEY), batch, KEY)
    assert float(start_loss) > 0 and abs(float(task.normalize(start_loss)) - 1.0) < 1e-4
    assert float(task.normalize(jnp.nan)) == f2d.CEILING


def test_other_himmelblau_minima_and_the_diagonal_line():
    for x, y in [(-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)]:
        assert abs(f2d.himmelblau(x, y)) < 1e-4
    index = jnp.asarray(f2d.FUNCTION_NAMES.index("diagonal"))
    for t in (-3.0, 0.0, 2.5):
        assert float(f2d.evaluate(index, jnp.asarray([t, t]))) == 0.0
    xy = jnp.asarray([1.0, -2.0])
    assert float(f2d.evaluate(index, xy)) == pytest.approx(4.5)


def test_gradient_noise_leaves_the_value_exact():
    task = build_2d("booth", noise=0.5, scale=2.0)
    params = task.init(KEY)
    train, test = task.sample_batch(KEY, "train"), task.sample_batch(KEY, "test")
    assert float(jnp.abs(test["xi"]).sum()) == 0.0 and float(jnp.abs(train["xi"]).sum()) > 0
    (noisy, noisy_grad), (exact, exact_grad) = (
        jax.value_and_grad(task.loss)(params, b, KEY) for b in (train, test))
    assert float(noisy) == pytest.approx(float(exact))
    np.testing.assert_allclose(noisy_grad["xy"] - exact_grad["xy"], train["xi"], rtol=1e-4)


def test_implicit_regularization_starts_lie_on_the_fan():
    family = f2d.ImplicitRegularizationFamily()
    for i in range(20):
        config = family.sample(jax.random.PRNGKey(i))
        x, y = config.start
        radius, angle = math.hypot(x, y), math.degrees(math.atan2(y, x))
        assert config.function == "diagonal"
        assert family.radius[0] <= radius <= family.radius[1]
        assert family.angles[0] <= angle <= family.angles[1]
        np.testing.assert_allclose(family.build(config).init(KEY)["xy"], config.start, rtol=1e-6)
    assert len(f2d.fan_points(5)) == 5


def test_noisy_quadratic_yaml_has_only_noisy_gradients():
    from lopt_cli.commands.common import build

    family = build(compose_config("meta_train", ["task_family=quadratic_noisy"]).task_family, "q")
    assert all(family.sample(jax.random.PRNGKey(i)).noise > 0 for i in range(50))


# --- conv nets ----------------------------------------------------------------------------------


def test_conv_resizes_images_and_both_heads_give_logits():
    arrays = image_arrays("digits", 16)
    assert arrays["train"]["x"].shape[1:] == (16, 16, 1)
    assert arrays["valid"]["x"].dtype == np.float32
    for head in ("dense", "global"):
        task = build_conv_classifier(
            ConvConfig("digits", 16, (4, 8), 3, "max", head, "relu", 8, 1.0, 0))
        batch = task.sample_batch(KEY, "train")
        logits = jax.eval_shape(task.logits, jax.eval_shape(task.init, KEY), batch["x"])
        assert logits.shape == (8, 10)


# --- autoencoders -------------------------------------------------------------------------------


def test_autoencoder_predicting_the_mean_normalises_to_one():
    task = build_autoencoder(AutoencoderConfig("digits", (32,), 4, "tanh", 16, 1.0, 0))
    params = task.init(KEY)
    data = task.data["train"]["x"]
    last = params["decoder"]["layer_1"]
    params["decoder"]["layer_1"] = {"w": jnp.zeros_like(last["w"]), "b": data.mean(axis=0)}
    loss = task.loss(params, {"x": data}, KEY)
    assert float(task.normalize(loss)) == pytest.approx(1.0, rel=1e-4)


# --- VAEs ---------------------------------------------------------------------------------------


def test_gaussian_kl_is_nonnegative_and_matches_monte_carlo():
    mean, log_var = jnp.asarray([0.5, -1.0]), jnp.asarray([0.3, -0.7])
    assert float(gaussian_kl(jnp.zeros(2), jnp.zeros(2))) == 0.0
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(KEY, (200_000, 2))
    log_q = jax.scipy.stats.norm.logpdf(z, mean, jnp.exp(0.5 * log_var)).sum(-1)
    log_p = jax.scipy.stats.norm.logpdf(z).sum(-1)
    assert float(gaussian_kl(mean, log_var)) == pytest.approx(float(jnp.mean(log_q - log_p)),
                                                              abs=0.02)
    keys = jax.random.split(KEY, 2)
    means, log_vars = jax.random.normal(keys[0], (100, 4)), jax.random.normal(keys[1], (100, 4))
    assert float(gaussian_kl(means, log_vars).min()) >= 0.0


@pytest.mark.parametrize("likelihood, obs_scale", [("bernoulli", 0.0), ("gaussian", 0.3)])
def test_vae_elbo_is_below_the_exact_log_likelihood(likelihood, obs_scale):
    """With a 1-D latent, log p(x) = log ∫ p(x|z) p(z) dz by quadrature bounds the ELBO."""
    task = build_vae(VAEConfig("digits", (16,), 1, likelihood, obs_scale, "tanh", 4, 1.0, 0))
    params = task.init(KEY)
    x = task.sample_batch(KEY, "valid")["x"]
    grid = jnp.linspace(-10.0, 10.0, 4001)[:, None]
    log_joint = (task.log_likelihood(task.decode(params, grid)[:, None, :], x[None])
                 + jax.scipy.stats.norm.logpdf(grid))  # [grid, batch]
    log_px = jax.scipy.special.logsumexp(log_joint, axis=0) + jnp.log(grid[1, 0] - grid[0, 0])
    keys = jax.random.split(KEY, 4000)
    reconstruction, kl = jax.jit(jax.vmap(lambda k: task.elbo_terms(params, x, k)))(keys)
    elbo = -(reconstruction.mean(0) + kl.mean(0))
    assert bool(jnp.all(kl >= 0))
    assert bool(jnp.all(elbo <= log_px + 1e-3)), (elbo, log_px)
    # The loss is the negative ELBO per pixel.
    reconstruction, kl = task.elbo_terms(params, x, KEY)
    assert float(task.loss(params, {"x": x}, KEY)) == pytest.approx(
        float(jnp.mean(reconstruction + kl)) / 64, rel=1e-5)


# --- normalising flows --------------------------------------------------------------------------


def flow_task_with_random_params(dataset: str = "moons"):
    task = build_flow(FlowConfig(dataset, 0.1, 0.4, 4, (16,), "tanh", 32, 1.0, 3))
    params = task.init(KEY)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(
        treedef, [leaf + 0.3 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)])
    return task, params


def grid_integral(log_density, half_width: float = 8.0, num: int = 401) -> float:
    ticks = jnp.linspace(-half_width, half_width, num)
    points = jnp.stack(jnp.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
    return float(np.sum(np.exp(log_density(np.asarray(points)))) * (ticks[1] - ticks[0]) ** 2)


def test_flow_density_integrates_to_one_and_inverts():
    task, params = flow_task_with_random_params()
    log_density = jax.jit(lambda x: task.log_prob(params, x))
    assert grid_integral(log_density) == pytest.approx(1.0, abs=0.02)
    x = task.sample_batch(KEY, "test")["x"]

    @jax.jit
    def round_trip(params, x):
        z, _ = task.model().apply({"params": params}, x)
        return task.model().apply({"params": params}, z, method=type(task.model()).inverse)

    np.testing.assert_allclose(round_trip(params, x), x, atol=1e-4)
    assert jax.eval_shape(lambda p, k: task.sample(p, k, 16), params, KEY).shape == (16, 2)


def test_flow_starts_as_identity_and_references_are_consistent():
    task = build_flow(FlowConfig("gaussians", 0.1, 0.3, 2, (16,), "relu", 64, 1.0, 5))
    x = task.data["test"]["x"]
    loss = task.loss(task.init(KEY), {"x": x}, KEY)
    standard_normal = -jnp.mean(jax.scipy.stats.norm.logpdf(x))
    assert float(loss) == pytest.approx(float(standard_normal), rel=1e-5)
    mixture = make_mixture("gaussians", 0.1, 5, 0.3)
    assert grid_integral(mixture.log_prob, 2.0) == pytest.approx(1.0, abs=0.01)
    exact_nll = -float(np.mean(mixture.log_prob(np.asarray(x, np.float64)))) / 2
    assert exact_nll == pytest.approx(float(task.entropy), abs=0.05)  # 0 when normalised
    assert float(task.normalize(jnp.asarray(exact_nll))) < 0.05
    assert float(task.entropy) < float(task.gaussian_loss) < float(loss)
    assert float(task.normalize(loss)) == pytest.approx(1.0, abs=0.02)


def test_different_functions_stack_into_one_vmapped_batch():
    from task_definitions.base import shape_signature, stack_tasks

    tasks = [build_2d(name) for name in f2d.FUNCTION_NAMES]
    assert len({shape_signature(t) for t in tasks}) == 1
    minima = jnp.asarray([f2d.KNOWN_MINIMA[name] for name in f2d.FUNCTION_NAMES], jnp.float32)
    losses = jax.vmap(lambda t, xy: t.loss({"xy": xy}, t.sample_batch(KEY, "test"), KEY))(
        stack_tasks(tasks), minima)
    assert float(jnp.abs(losses).max()) < 1e-3
