"""``ademamix``: Adam plus a slow momentum, warmed in over half the horizon."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt_cli import load_optimizer
from lopt_cli.optimizers.ademamix import ademamix


def run(opt, steps=20):
    params = {"w": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.asarray([0.3, -0.1])}
    state = opt.init(params)
    loss = lambda p: jnp.sum(jnp.square(p["w"]) ** 2) + jnp.sum(jnp.sin(p["b"]))  # noqa: E731
    for _ in range(steps):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_without_the_slow_momentum_it_is_adam():
    np.testing.assert_allclose(run(ademamix(1e-2, num_steps=20, alpha=0.0))["w"],
                               run(optax.adam(1e-2))["w"], rtol=1e-5)


def test_the_slow_momentum_changes_the_steps_once_warmed_in():
    mixed, adam = run(ademamix(1e-2, num_steps=20))["w"], run(optax.adam(1e-2))["w"]
    assert not np.allclose(mixed, adam, rtol=1e-3)


def test_loaded_by_name_with_a_learning_rate():
    opt = load_optimizer("ademamix", 20, learning_rate=1e-2)
    np.testing.assert_allclose(run(opt)["w"], run(ademamix(1e-2, num_steps=20))["w"])
