"""Muon with a stored Newton–Schulz factor: the Gram-side factor, ``muon_nominal``'s
``ns_refresh_every`` and the hand-designed ``lazy_muon``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.dropin import load_optimizer
from lopt_cli.optimizers.muon_nominal import MuonNominalLOpt, newton_schulz_factor, orthogonalised, tall, unit


@pytest.mark.parametrize("shape", [(64, 24), (24, 64), (16, 16), (100, 3)])
def test_the_gram_side_factor_gives_muons_newton_schulz_iterates(shape):
    matrix = jax.random.normal(jax.random.key(0), shape) * jnp.linspace(0.1, 10.0, shape[1])
    x = unit(tall(matrix))
    np.testing.assert_allclose(x @ newton_schulz_factor(x), tall(orthogonalised(matrix)),
                               atol=1e-4)  # float32 rounding of two orders


def matrix_steps(lopt, grads):
    """The updates of a (6, 4) matrix and the state's stored factor after each gradient."""
    params = {"w": jnp.ones((6, 4)), "b": jnp.ones((4,))}
    opt = lopt.transform(lopt.init(jax.random.key(0)), 100)
    state, out = opt.init(params), []
    for g in grads:
        updates, state = opt.update({"w": g, "b": jnp.ones((4,))}, state, params)
        out.append((np.asarray(updates["w"]), np.asarray(state.ns_factor["w"])))
    return out


def test_a_stored_factor_is_refreshed_every_k_steps_and_reused_in_between():
    grads = [jax.random.normal(jax.random.key(i), (6, 4)) for i in range(5)]
    exact = matrix_steps(MuonNominalLOpt(), grads)
    lazy = matrix_steps(MuonNominalLOpt(ns_refresh_every=3), grads)
    assert exact[0][1].shape == ()  # no factor is stored when every step is orthogonalised
    factors = [factor for _, factor in lazy]
    assert factors[0].shape == (4, 4)
    np.testing.assert_array_equal(factors[1], factors[0])  # steps 1, 2 reuse step 0's
    np.testing.assert_array_equal(factors[2], factors[0])
    assert not np.allclose(factors[3], factors[0])  # step 3 refreshes
    np.testing.assert_array_equal(factors[4], factors[3])
    for step in (0, 3):  # a refresh step is Muon's exactly
        np.testing.assert_allclose(lazy[step][0], exact[step][0], rtol=1e-4, atol=1e-7)
    assert not np.allclose(lazy[1][0], exact[1][0], rtol=1e-3)  # in between: the old factor


def test_blocks_and_a_stored_factor_are_refused_together():
    with pytest.raises(LoptUserError, match="ns_block=8 needs ns_refresh_every=1"):
        MuonNominalLOpt(ns_block=8, ns_refresh_every=4)
    with pytest.raises(LoptUserError, match="ns_refresh_every=0"):
        MuonNominalLOpt(ns_refresh_every=0)


def test_the_hand_designed_lazy_muon_steps_along_muons_direction_at_a_refresh():
    opt = load_optimizer("lazy_muon", 100, learning_rate=1e-2)
    params = {"w": jnp.zeros((5, 9)), "b": jnp.zeros((9,))}
    grads = {"w": jax.random.normal(jax.random.key(1), (5, 9)), "b": jnp.ones((9,))}
    updates, state = opt.update(grads, opt.init(params), params)
    direction = orthogonalised(grads["w"] * 1.95)  # Nesterov: 0.95 m + g with m = g
    cosine = jnp.sum(updates["w"] * direction) / (jnp.linalg.norm(updates["w"])
                                                  * jnp.linalg.norm(direction))
    assert float(cosine) < -0.9999
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(jnp.square(updates["w"]))), 0.2 * 1e-2,
                               rtol=1e-4)
