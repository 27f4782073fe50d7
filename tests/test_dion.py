"""``dion``: Muon's recipe with one warm-started power iteration per step instead of
Newton–Schulz."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.dion import power_step
from lopt_cli.optimizers.dropin import load_optimizer
from lopt_cli.optimizers.muon_nominal import MuonNominalLOpt
from lopt_cli.optimizers.power_orthogonal import dion_rank, initial_basis, orthonormal_columns


def exact_polar(matrix: jax.Array) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(matrix), full_matrices=False)
    return u @ vt


def test_repeated_power_steps_on_one_momentum_converge_to_its_polar_factor():
    """On a fixed momentum the stored basis is a subspace iteration: the step tends to U Vᵀ."""
    matrix = jax.random.normal(jax.random.key(0), (48, 20)) * jnp.linspace(0.1, 3.0, 20)
    basis = initial_basis(matrix, 1.0)
    errors = []
    for _ in range(30):
        step, _, basis = power_step(matrix, jnp.zeros_like(matrix), basis, 0.95)
        errors.append(np.linalg.norm(step - exact_polar(matrix)) / np.sqrt(20))
    assert errors[-1] < 0.02 < errors[0]


def test_at_full_rank_the_error_feedback_is_heavy_ball_momentum():
    momentum = jax.random.normal(jax.random.key(1), (12, 8))
    gradient = jax.random.normal(jax.random.key(2), (12, 8))
    _, new_momentum, _ = power_step(gradient, momentum, initial_basis(gradient, 1.0), 0.9)
    np.testing.assert_allclose(new_momentum, 0.9 * (momentum + gradient), atol=1e-5)


def test_at_low_rank_the_directions_not_stepped_stay_in_the_momentum():
    """Rank r keeps B − (1 − μ) P Pᵀ B: the part of B outside P's span is kept whole."""
    gradient = jax.random.normal(jax.random.key(3), (16, 12))
    basis = initial_basis(gradient, 0.25)
    assert basis.shape == (12, dion_rank(gradient.shape, 0.25)) == (12, 3)
    step, new_momentum, _ = power_step(gradient, jnp.zeros_like(gradient), basis, 0.95)
    assert np.linalg.matrix_rank(np.asarray(step), tol=1e-4) == 3
    p, _ = np.linalg.qr(np.asarray(gradient @ basis))
    outside = np.asarray(gradient) - p @ (p.T @ np.asarray(gradient))
    np.testing.assert_allclose(new_momentum - 0.95 * p @ (p.T @ np.asarray(gradient)), outside,
                               atol=1e-5)


def test_a_zero_momentum_steps_zero_and_keeps_its_basis():
    zero = jnp.zeros((5, 3))
    basis = initial_basis(zero, 1.0)
    step, momentum, new_basis = power_step(zero, zero, basis, 0.95)
    np.testing.assert_array_equal(step, 0.0)
    np.testing.assert_array_equal(momentum, 0.0)
    np.testing.assert_array_equal(new_basis, basis)


def test_a_negligible_direction_is_not_blown_up_to_a_full_step():
    """Rows of a digit MLP's first layer whose pixel is always zero have zero gradient: the step
    leaves them (nearly) alone, as Newton–Schulz does, instead of unit-normalising noise."""
    gradient = jax.random.normal(jax.random.key(4), (10, 6)).at[:3].set(0.0)
    basis = initial_basis(gradient, 1.0)
    for _ in range(5):
        step, _, basis = power_step(gradient, jnp.zeros_like(gradient), basis, 0.95)
    assert float(jnp.max(jnp.abs(step[:3]))) < 1e-2 < float(jnp.max(jnp.abs(step[3:])))


@pytest.mark.parametrize("shape", [(3, 7), (7, 3)])
def test_dion_steps_wide_and_tall_matrices_along_their_own_orientation(shape):
    opt = load_optimizer("dion", 100, learning_rate=1.0)
    params = {"w": jnp.zeros(shape)}
    gradient = {"w": jax.random.normal(jax.random.key(5), shape)}
    state = opt.init(params)
    for _ in range(20):
        step, state = opt.update(gradient, state, params)
    direction = -np.asarray(step["w"]) / 0.2 * np.sqrt(min(shape) / np.prod(shape))
    np.testing.assert_allclose(direction, exact_polar(gradient["w"]), atol=2e-2)


def nominal_matrix_steps(lopt, grads):
    """The updates of a (6, 4) matrix and its stored basis after each gradient."""
    params = {"w": jnp.ones((6, 4)), "b": jnp.ones((4,))}
    opt = lopt.transform(lopt.init(jax.random.key(0)), 100)
    state, out = opt.init(params), []
    for g in grads:
        updates, state = jax.jit(opt.update)({"w": g, "b": jnp.ones((4,))}, state, params)
        out.append((np.asarray(updates["w"]), np.asarray(state.ns_factor["w"])))
    return out


def test_muon_nominal_with_the_power_orthogonaliser_tends_to_newton_schulzs_step():
    """The same gradient every step: the stored basis converges and the untrained step (Muon's
    scale, the power direction) comes within Newton–Schulz's own distance of U Vᵀ."""
    grads = [jax.random.normal(jax.random.key(6), (6, 4))] * 25
    power = nominal_matrix_steps(MuonNominalLOpt(orthogonaliser="power"), grads)
    newton = nominal_matrix_steps(MuonNominalLOpt(), grads)
    assert power[0][1].shape == (4, 4) and newton[0][1].shape == ()
    assert not np.allclose(power[0][1], power[1][1])  # the basis moves with the momentum
    unit_rms = lambda m: m / np.sqrt(np.mean(np.square(m)))  # noqa: E731
    polar = unit_rms(exact_polar(grads[0]))
    power_error = np.linalg.norm(unit_rms(-power[-1][0]) - polar)
    newton_error = np.linalg.norm(unit_rms(-newton[-1][0]) - polar)
    assert power_error < min(0.1, newton_error)


@pytest.mark.parametrize("fields, match", [
    ({"orthogonaliser": "svd"}, "orthogonaliser="),
    ({"orthogonaliser": "power", "ns_block": 8}, "orthogonaliser=power needs ns_block=null"),
    ({"orthogonaliser": "power", "ns_refresh_every": 5}, "and ns_refresh_every=1"),
    ({"orthogonaliser": "power", "ns_steps": 3}, "leave ns_steps at 5")])
def test_muon_nominal_refuses_the_power_orthogonaliser_with_blocks_or_a_stored_factor(fields,
                                                                                       match):
    with pytest.raises(LoptUserError, match=match):
        MuonNominalLOpt(**fields)


def test_gram_schmidt_gives_a_dependent_column_zero_and_keeps_the_rest_orthonormal():
    a = jax.random.normal(jax.random.key(2), (12, 4))
    a = a.at[:, 2].set(2.0 * a[:, 0] - 0.5 * a[:, 1])  # in the span of the two before it
    q = orthonormal_columns(a)
    np.testing.assert_array_equal(q[:, 2], jnp.zeros(12))
    kept = q[:, jnp.asarray([0, 1, 3])]
    np.testing.assert_allclose(kept.T @ kept, jnp.eye(3), atol=1e-5)
    reference, _ = jnp.linalg.qr(a[:, jnp.asarray([0, 1, 3])])
    np.testing.assert_allclose(jnp.abs(kept.T @ reference), jnp.eye(3), atol=1e-5)
