"""Muon as a hand-designed optimizer and as the nominal term of ``muon_nominal``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import contrib
from test_scheduled_lopts import make_params, run
from tests_support import perturbed

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.balanced_nominal import BalancedNominalLOpt
from lopt_cli.optimizers.dropin import load_optimizer
from lopt_cli.optimizers.muon_nominal import MuonNominalLOpt, orthogonalised


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (16, 16)])
def test_newton_schulz_keeps_the_singular_vectors_and_pulls_the_values_towards_one(shape):
    matrix = jax.random.normal(jax.random.key(0), shape) * jnp.linspace(0.1, 10.0, shape[1])
    u, _, vt = np.linalg.svd(np.asarray(matrix), full_matrices=False)
    rotated = u.T @ np.asarray(orthogonalised(matrix)) @ vt.T  # diagonal for U f(Σ) Vᵀ
    values = np.diag(rotated)
    assert np.all((values > 0.6) & (values < 1.3)), values  # Muon's quintic: about [0.7, 1.2]
    np.testing.assert_allclose(rotated - np.diag(values), 0.0, atol=1e-4)
    np.testing.assert_allclose(orthogonalised(matrix.T), orthogonalised(matrix).T, atol=1e-5)


@pytest.mark.parametrize("shape", [(300, 130), (130, 300)])
def test_blocked_newton_schulz_orthogonalises_each_group_of_the_smaller_side_on_its_own(shape):
    matrix = jax.random.normal(jax.random.key(1), shape)
    blocked = np.asarray(orthogonalised(matrix, 5, block=64))  # 130 → 3 groups of 44, 44, 42
    for start, stop in ((0, 44), (44, 88), (88, 130)):
        group = (slice(None), slice(start, stop)) if shape[0] > shape[1] else slice(start, stop)
        np.testing.assert_allclose(blocked[group], orthogonalised(matrix[group]), atol=1e-5)
    whole = np.asarray(orthogonalised(matrix))
    assert not np.allclose(blocked, whole, atol=1e-2)  # the groups are not mutually orthogonal


def test_a_matrix_no_wider_than_the_block_is_orthogonalised_whole_exactly():
    matrix = jax.random.normal(jax.random.key(2), (64, 200))
    np.testing.assert_array_equal(orthogonalised(matrix, 5, block=64), orthogonalised(matrix))


def test_muon_nominal_with_blocks_steps_wide_matrices_at_the_same_rms():
    lopt, blocked = MuonNominalLOpt(), MuonNominalLOpt(ns_block=16)
    params = {"w": jax.random.normal(jax.random.key(3), (48, 96)) * 0.1}
    grads = {"w": jax.random.normal(jax.random.key(4), (48, 96))}

    def step(opt):
        transform = opt.transform(opt.init(jax.random.key(0)), 100)
        updates, _ = transform.update(grads, transform.init(params), params)
        return np.asarray(updates["w"])

    whole, grouped = step(lopt), step(blocked)
    assert not np.allclose(whole, grouped, atol=1e-6)
    rms = [float(np.sqrt(np.mean(np.square(u)))) for u in (whole, grouped)]
    np.testing.assert_allclose(rms[1], rms[0], rtol=0.1)


@pytest.mark.parametrize("field, value", [("muon_rms", 0), ("muon_rms", float("nan")),
                                          ("beta2_fast", 0.99), ("ns_steps", 0),
                                          ("ns_block", 0), ("ns_block", 2.5),
                                          ("ns_max_side", 0)])
def test_muon_nominal_refuses_a_bad_field_by_name(field, value):
    with pytest.raises(LoptUserError, match=f"{field}="):
        MuonNominalLOpt(**{field: value})


def test_untrained_muon_nominal_is_muon_on_matrices_and_adam_elsewhere():
    lopt = MuonNominalLOpt(schedule="constant", schedule_hidden=0)
    ours = run(lopt.transform(lopt.init(jax.random.key(0)), 100), make_params(), 30)
    muon = run(contrib.muon(1e-3, beta=0.9, nesterov=True, consistent_rms=0.2),
               make_params(), 30)
    adam = run(optax.adam(1e-3), make_params(), 30)
    np.testing.assert_allclose(ours["w"], muon["w"], rtol=1e-6, atol=1e-6)
    assert not np.allclose(ours["w"], adam["w"], atol=1e-3)
    for key in ("b", "s"):  # not matrices: exactly adam_nominal, i.e. Adam
        np.testing.assert_allclose(ours[key], adam[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_side, muon_on_w", [(3, False), (4, True)])
def test_ns_max_side_leaves_wider_matrices_to_adams_direction(max_side, muon_on_w):
    """``w`` is (6, 4): its smaller side 4 takes Muon's direction only up to ns_max_side."""
    lopt = MuonNominalLOpt(schedule="constant", schedule_hidden=0, ns_max_side=max_side)
    ours = run(lopt.transform(lopt.init(jax.random.key(0)), 100), make_params(), 10)
    everywhere = MuonNominalLOpt(schedule="constant", schedule_hidden=0)
    muon = run(everywhere.transform(everywhere.init(jax.random.key(0)), 100), make_params(), 10)
    adam = run(optax.adam(1e-3), make_params(), 10)
    expected = muon if muon_on_w else adam
    np.testing.assert_allclose(ours["w"], expected["w"], rtol=1e-6, atol=1e-7)
    for key in ("b", "s"):
        np.testing.assert_allclose(ours[key], adam[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("architecture", [MuonNominalLOpt, BalancedNominalLOpt])
def test_meta_parameters_move_a_nominal_direction_variant_away_from_its_nominal_step(
        architecture):
    lopt = architecture(schedule="constant", schedule_hidden=0)
    untrained = run(lopt.transform(lopt.init(jax.random.key(0)), 100), make_params(), 5)
    moved = run(lopt.transform(perturbed(lopt.init(jax.random.key(0))), 100), make_params(), 5)
    assert not np.allclose(untrained["w"], moved["w"], atol=1e-6)


@pytest.mark.parametrize("name, rms_range", [("muon", (0.15, 0.25)),  # Muon's √max(A, B) scale
                                             ("lazy_muon", (0.1999, 0.2001)),  # RMS-matched
                                             ("sinkhorn", (0.1999, 0.2001)),
                                             ("dion", (0.1999, 0.2001))])
def test_a_hand_designed_muon_steps_a_matrix_at_a_fifth_of_its_rate_in_rms_and_nadam_elsewhere(
        name, rms_range):
    opt = load_optimizer(name, 100, learning_rate=1e-2)
    params = make_params()
    grads = jax.grad(lambda p: jnp.sum(jnp.square(p["w"] - 1.0)) + jnp.sum(p["b"]))(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    rms = float(jnp.sqrt(jnp.mean(jnp.square(updates["w"]))))
    assert rms_range[0] * 1e-2 < rms < rms_range[1] * 1e-2
    nadam, _ = optax.nadam(1e-2).update(grads, optax.nadam(1e-2).init(params), params)
    np.testing.assert_allclose(updates["b"], nadam["b"], rtol=1e-6)  # elsewhere: NAdam
