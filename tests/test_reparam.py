"""The weight-rescaling augmentation (``task_definitions.reparam``) and ``task_family=celo_mix``.

``celo_mix`` is also enrolled in the conformance suite of ``test_task_families.py`` (every
option of the ``task_family`` group); here: the reparameterisation is exact, its factors are
deterministic and in range, wrapped tasks stack, and the optional TFDS datasets of the mix.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests_support import compose_config

from lopt_cli.commands.common import build
from lopt_cli.errors import LoptUserError
from task_definitions import mlp
from task_definitions.autoencoder import AutoencoderFamily
from task_definitions.base import shape_signature, stack_tasks, with_seed
from task_definitions.datasets.images import small_images
from task_definitions.mlp import MLPFamily
from task_definitions.reparam import ReparamFamily, draw_factors, reparameterize

SMALL_MLP = MLPFamily(widths=(8,), depths=(2,), batch_sizes=(16,))
SMALL_AUTOENCODER = AutoencoderFamily(datasets=("digits",), widths=(8,), depths=(1,),
                                      bottlenecks=(4,), batch_sizes=(16,))


def tree_close(a, b, rtol=1e-5, atol=1e-7) -> None:
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def factor_values(task) -> np.ndarray:
    return np.asarray([float(c) for c in jax.tree_util.tree_leaves(task.factors)])


@pytest.mark.parametrize("family", [SMALL_MLP, SMALL_AUTOENCODER], ids=["mlp", "autoencoder"])
def test_wrapped_loss_at_rescaled_parameters_equals_the_original(family):
    inner = family.build(family.sample(jax.random.PRNGKey(0)))
    task = reparameterize(inner, seed=11)
    assert factor_values(task).max() / factor_values(task).min() > 10  # a real rescaling
    key, batch_key = jax.random.split(jax.random.PRNGKey(1))
    params = inner.init(key)
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jnp.sign(p + 0.5), params)  # not just init
    rescaled = jax.tree_util.tree_map(lambda p, c: p / c, params, task.factors)
    batch = task.sample_batch(batch_key, "train")
    np.testing.assert_allclose(task.loss(rescaled, batch, key), inner.loss(params, batch, key),
                               rtol=1e-5)
    tree_close(jax.tree_util.tree_map(lambda q, c: q * c, task.init(key), task.factors),
               inner.init(key))
    assert task.normalize(jnp.asarray(0.7)) == inner.normalize(jnp.asarray(0.7))


def test_gradient_in_q_is_the_factor_times_the_gradient_in_p():
    inner = SMALL_MLP.build(SMALL_MLP.sample(jax.random.PRNGKey(2)))
    task = reparameterize(inner, seed=5)
    key = jax.random.PRNGKey(3)
    batch = task.sample_batch(key, "train")
    q = task.init(key)
    grad_q = jax.grad(task.loss)(q, batch, key)
    grad_p = jax.grad(inner.loss)(task.original(q), batch, key)
    tree_close(grad_q, jax.tree_util.tree_map(lambda g, c: c * g, grad_p, task.factors),
               rtol=2e-4, atol=1e-6)


def test_factors_are_deterministic_in_the_seed_and_within_range():
    shapes = {"a": jnp.zeros((3, 2)), "b": jnp.zeros(4), "c": [jnp.zeros(()), jnp.zeros(5)]}
    first = draw_factors(shapes, 7, 1e-3, 1e3)
    assert jax.tree_util.tree_structure(first) == jax.tree_util.tree_structure(shapes)
    tree_close(first, draw_factors(shapes, 7, 1e-3, 1e3), rtol=0)
    values = [float(c) for seed in range(50) for c in
              jax.tree_util.tree_leaves(draw_factors(shapes, seed, 1e-3, 1e3))]
    assert 1e-3 <= min(values) and max(values) <= 1e3
    assert min(values) < 1e-2 and max(values) > 1e2  # spread over the log range
    assert len(set(values)) == len(values)  # per tensor and per seed
    narrow = jax.tree_util.tree_leaves(draw_factors(shapes, 7, 0.5, 2.0))
    assert all(0.5 <= float(c) <= 2.0 for c in narrow)


def test_family_is_deterministic_and_keeps_the_inner_task_of_each_key():
    family = ReparamFamily(SMALL_MLP, param_scale=(0.01, 100.0))
    assert family.name == "mlp_reparam"
    for task_id in range(5):
        config = family.sample(jax.random.PRNGKey(task_id))
        assert config == family.sample(jax.random.PRNGKey(task_id))
        assert config.inner == SMALL_MLP.sample(jax.random.PRNGKey(task_id))
        assert (config.low, config.high) == (0.01, 100.0)
        factors = factor_values(family.build(config))
        np.testing.assert_array_equal(factors, factor_values(family.build(config)))
        assert np.all((factors >= 0.01) & (factors <= 100.0))
    reseeded = with_seed(config, 123)
    assert reseeded.seed == 123 and reseeded.inner.seed == 123


def test_reseeded_wrapped_tasks_stack_and_vmap_like_one_by_one():
    family = ReparamFamily(SMALL_MLP)
    config = family.sample(jax.random.PRNGKey(4))
    tasks = [family.build(with_seed(config, config.seed + i)) for i in range(3)]
    assert len({shape_signature(t) for t in tasks}) == 1
    assert len({tuple(factor_values(t)) for t in tasks}) == 3  # other factors per member
    keys = jax.random.split(jax.random.PRNGKey(0), 3)

    @jax.jit
    def loss(task, key):
        return task.loss(task.init(key), task.sample_batch(key, "train"), key)

    batched = jax.vmap(loss)(stack_tasks(tasks), keys)
    one_by_one = jnp.stack([loss(t, k) for t, k in zip(tasks, keys)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)


@pytest.mark.parametrize("bad", [[1.0, 0.1], [0.0, 1.0], [1.0], [1.0, float("inf")]])
def test_bad_param_scale_is_one_line_naming_it(bad):
    cfg = compose_config("tasks", ["task_family=celo_mix", f"task_family.param_scale={bad}"])
    with pytest.raises(LoptUserError) as info:
        build(cfg.task_family, "task_family")
    assert "param_scale=" in str(info.value) and "\n" not in str(info.value)


def test_celo_mix_is_small_relu_mlps_with_batch_64_on_the_offline_datasets():
    family = build(compose_config("tasks", ["task_family=celo_mix"]).task_family, "celo_mix")
    assert family.name == "celo_mix" and family.param_scale == (1e-3, 1e3)
    configs = [family.sample(jax.random.PRNGKey(i)) for i in range(40)]
    assert {c.inner.dataset for c in configs} >= {"digits", "mnist1d", "synthetic"}
    assert {(c.inner.hidden_sizes, c.inner.activation, c.inner.batch_size)
            for c in configs} == {((32,), "relu", 64)}
    task = family.build(next(c for c in configs if c.inner.dataset == "digits"))
    params = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    assert params["layer_0"]["w"].shape == (64, 32) and params["layer_1"]["w"].shape == (32, 10)


def fake_availability(monkeypatch, present: set) -> None:
    import task_definitions.datasets as datasets

    builtin = set(datasets.BUILTIN_DATASETS)
    monkeypatch.setattr(datasets, "is_available", lambda name, data_dir=None:
                        name in builtin | present)
    mlp._available.cache_clear()


def test_absent_optional_datasets_only_change_the_tasks_that_drew_them(monkeypatch):
    family = MLPFamily(datasets=("digits",), optional_datasets=("mnist", "cifar10"))
    keys = [jax.random.PRNGKey(i) for i in range(60)]
    fake_availability(monkeypatch, {"mnist", "cifar10"})
    everywhere = [family.sample(k) for k in keys]
    fake_availability(monkeypatch, {"mnist"})
    here = [family.sample(k) for k in keys]
    mlp._available.cache_clear()
    assert {c.dataset for c in everywhere} == {"digits", "mnist", "cifar10"}
    assert {c.dataset for c in here} == {"digits", "mnist"}
    for full, partial in zip(everywhere, here):
        if full.dataset != "cifar10":
            assert partial == full  # the same task on both machines
        else:  # redrawn among the present ones; every other field unchanged
            assert partial.dataset in ("digits", "mnist")
            assert partial.seed == full.seed and partial.hidden_sizes == full.hidden_sizes


def test_a_missing_dataset_named_explicitly_is_the_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
    cfg = compose_config("tasks", ["task_family=celo_mix", "task_family.family.datasets=[mnist]"])
    with pytest.raises(LoptUserError) as info:
        build(cfg.task_family, "task_family")
    message = str(info.value)
    assert "'mnist' is not available offline" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_prepared_catalog_images_join_the_mix_as_8x8_grey(monkeypatch, tmp_path):
    from test_datasets import _fake_catalog_dataset

    _fake_catalog_dataset(tmp_path)
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
    mlp._available.cache_clear()
    family = build(compose_config("tasks", ["task_family=celo_mix"]).task_family, "celo_mix")
    assert "mnist" in family.family.available_datasets()
    config = next(c for c in map(family.sample, map(jax.random.PRNGKey, range(100)))
                  if c.inner.dataset == "mnist")
    task = family.build(config)
    assert task.inner.data["train"]["x"].shape == (45, 64)
    batch = task.sample_batch(jax.random.PRNGKey(0), "valid")
    assert jnp.isfinite(task.loss(task.init(jax.random.PRNGKey(1)), batch, jax.random.PRNGKey(2)))
    mlp.classification_arrays.cache_clear()
    mlp._available.cache_clear()


def test_small_images_average_areas_and_convert_to_luma():
    rgb = np.broadcast_to(np.asarray([0.2, 0.4, 0.8], np.float32), (3, 32, 32, 3))
    grey = small_images(rgb, 8, grayscale=True)
    assert grey.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(grey, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.8, rtol=1e-5)
    stripes = np.zeros((1, 32, 32), np.float32)
    stripes[:, :, ::2] = 1.0  # period 2: far above the 8x8 Nyquist limit
    small = small_images(stripes, 8)[0, :, :, 0]  # antialiased: no aliasing into 0s or 1s
    np.testing.assert_allclose(small[:, 1:-1], 0.5, atol=1e-5)
    np.testing.assert_allclose(small, 0.5, atol=0.05)  # the edges see half a kernel
    assert small_images(rgb, 8).shape == (3, 8, 8, 3)
    assert small_images(stripes, 0).shape == (1, 32, 32, 1)


def test_cheap_mix_reparameterises_the_suites_cheap_families():
    """``task_family=cheap_mix``: every task wrapped, drawn from the six cheap families only."""
    family = build(compose_config("tasks", ["task_family=cheap_mix"]).task_family, "cheap_mix")
    assert isinstance(family, ReparamFamily) and family.param_scale == (1e-3, 1e3)
    cheap = {"quadratic", "quadratic_noisy", "functions_2d", "mlp_digits", "mlp_autoencoder",
             "normalizing_flow"}
    assert {name for name, _ in family.family.families} == cheap
    configs = [family.sample(jax.random.PRNGKey(i)) for i in range(60)]
    assert {c.inner.family for c in configs} == cheap
    task = family.build(configs[0])
    params = task.init(jax.random.PRNGKey(0))
    batch = task.sample_batch(jax.random.PRNGKey(1), "train")
    assert np.isfinite(float(task.loss(params, batch, jax.random.PRNGKey(2))))

