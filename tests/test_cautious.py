"""Cautious masking: the mask itself, ``cautious_adam`` and the nominal variants' ``cautious``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hydra import compose, initialize_config_module

from lopt_cli.config import instantiate_plain
from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.adam_nominal import AdamNominalLOpt
from lopt_cli.optimizers.cautious import MIN_KEPT_FRACTION, cautious_adam, cautious_mask
from lopt_cli.optimizers.muon_nominal import MuonNominalLOpt


def make_params():
    keys = jax.random.split(jax.random.key(5), 2)
    return {"w": jax.random.normal(keys[0], (6, 4)), "b": 0.1 * jax.random.normal(keys[1], (4,))}


def loss_fn(params):
    return jnp.sum(jnp.square(params["w"] - 1.0) ** 2) + jnp.sum(jnp.cos(3.0 * params["b"]))


def test_the_mask_keeps_agreeing_entries_and_their_mean_magnitude():
    direction = jnp.asarray([1.0, -2.0, 3.0, -4.0, 0.5])
    grad = jnp.asarray([1.0, 1.0, -1.0, -1.0, 0.0])  # agree, against, against, agree, zero
    masked = cautious_mask(direction, grad)
    np.testing.assert_allclose(masked, [1.0 / 0.4, 0.0, 0.0, -4.0 / 0.4, 0.0], rtol=1e-6)


def test_the_mask_of_a_direction_against_the_gradient_everywhere_is_zero():
    direction = jnp.asarray([[1.0, -2.0], [3.0, 0.5]])
    masked = cautious_mask(direction, -direction)
    np.testing.assert_array_equal(masked, jnp.zeros_like(direction))
    assert MIN_KEPT_FRACTION > 0  # no division by zero on the way


def test_a_direction_along_the_gradient_is_unchanged():
    direction = jnp.asarray([0.3, -1.0, 2.0])
    np.testing.assert_allclose(cautious_mask(direction, 5.0 * direction), direction)


def run(opt, steps: int):
    params = make_params()
    state = opt.init(params)
    for _ in range(steps):
        grads = jax.grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_cautious_adam_never_steps_against_the_gradient_and_differs_from_adam():
    opt = cautious_adam(1e-2)
    params = make_params()
    state = opt.init(params)
    masked_somewhere = False
    for _ in range(40):
        grads = jax.grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
            assert bool(jnp.all(u * g <= 0.0))
            masked_somewhere |= bool(jnp.any((u == 0.0) & (g != 0.0)))
        params = optax.apply_updates(params, updates)
    assert masked_somewhere  # the oscillating cos term makes the momentum disagree at times
    assert float(loss_fn(params)) < float(loss_fn(make_params()))


def test_untrained_cautious_adam_nominal_is_cautious_adam():
    lopt = AdamNominalLOpt(cautious=True, learning_rate=3e-2, schedule="constant",
                           schedule_hidden=0)
    ours = run(lopt.transform(lopt.init(jax.random.key(0)), 100), 30)
    theirs = run(cautious_adam(3e-2), 30)
    adam = run(optax.adam(3e-2), 30)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(a, c, rtol=1e-4, atol=1e-6)
                   for a, c in zip(jax.tree.leaves(ours), jax.tree.leaves(adam)))


def test_cautious_muon_nominal_masks_its_matrix_steps_too():
    lopt = MuonNominalLOpt(cautious=True)
    opt = lopt.transform(lopt.init(jax.random.key(0)), 100)
    params = make_params()
    state = opt.init(params)
    for _ in range(10):
        grads = jax.grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        assert bool(jnp.all(updates["w"] * grads["w"] <= 0.0))
        params = optax.apply_updates(params, updates)


def test_the_hydra_config_turns_it_on_and_checks_it():
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("meta_train", overrides=["optimizer=adam_nominal", "optimizer.cautious=true"])
    assert instantiate_plain(cfg.optimizer).cautious is True
    with pytest.raises(LoptUserError, match="cautious"):
        AdamNominalLOpt(cautious="yes")
