"""``sinkhorn``: Muon's recipe with row/column-balanced momentum instead of Newton–Schulz."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_scheduled_lopts import make_params, run

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.balanced_nominal import BalancedNominalLOpt
from lopt_cli.optimizers.dropin import load_optimizer
from lopt_cli.optimizers.matrix_split import matrix_labels
from lopt_cli.optimizers.sinkhorn import scale_by_sinkhorn, sinkhorn_balanced


@pytest.mark.parametrize("shape", [(6, 40), (40, 6), (16, 16)])
def test_balancing_gives_every_row_and_column_the_same_norm_at_rms_one(shape):
    rows, cols = shape
    matrix = (jax.random.normal(jax.random.key(0), shape)
              * jnp.linspace(0.01, 10.0, cols) * jnp.linspace(1.0, 100.0, rows)[:, None])
    balanced = np.asarray(sinkhorn_balanced(matrix, 20))
    np.testing.assert_allclose(np.linalg.norm(balanced, axis=0), np.sqrt(rows), rtol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(balanced, axis=1), np.sqrt(cols), rtol=1e-3)
    np.testing.assert_allclose(np.sqrt(np.mean(np.square(balanced))), 1.0, rtol=1e-3)
    assert np.all(np.sign(balanced) == np.sign(np.asarray(matrix)))  # a positive rescaling


def test_balancing_ignores_the_scale_and_keeps_a_zero_row_zero():
    matrix = jax.random.normal(jax.random.key(1), (5, 7)).at[2].set(0.0)
    balanced = np.asarray(sinkhorn_balanced(matrix))
    np.testing.assert_allclose(sinkhorn_balanced(1e-3 * matrix), balanced, rtol=1e-4)
    np.testing.assert_array_equal(balanced[2], 0.0)
    assert np.all(np.isfinite(balanced))


def test_sinkhorn_steps_along_nesterov_momentum_of_beta_095():
    """Two steps with gradients g1, g2: the second direction balances 0.95·m + g2 with
    m = 0.95·g1 + g2, not the raw gradient."""
    opt = load_optimizer("sinkhorn", 100, learning_rate=1.0)
    params = {"w": jnp.zeros((3, 4))}
    g1 = {"w": jax.random.normal(jax.random.key(2), (3, 4))}
    g2 = {"w": jax.random.normal(jax.random.key(3), (3, 4))}
    state = opt.init(params)
    _, state = opt.update(g1, state, params)
    second, _ = opt.update(g2, state, params)
    momentum = 0.95 * g1["w"] + g2["w"]
    expected = -0.2 * sinkhorn_balanced(0.95 * momentum + g2["w"])
    np.testing.assert_allclose(second["w"], expected, rtol=1e-5, atol=1e-7)


def test_untrained_balanced_nominal_is_the_sinkhorn_step_on_matrices_and_adam_elsewhere():
    lopt = BalancedNominalLOpt(schedule="constant", schedule_hidden=0)
    ours = run(lopt.transform(lopt.init(jax.random.key(0)), 100), make_params(), 30)
    reference = optax.multi_transform(
        {"matrix": optax.chain(scale_by_sinkhorn(beta=0.9), optax.scale(-1e-3)),
         "other": optax.adam(1e-3)}, matrix_labels)
    expected = run(reference, make_params(), 30, pass_loss=False)
    for key in ("w", "b", "s"):  # the EMA momentum is the trace's times (1 - β): same balance
        np.testing.assert_allclose(ours[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field, value", [("matrix_rms", 0), ("matrix_rms", float("inf")),
                                          ("balance_iterations", 0), ("beta2_fast", 0.99)])
def test_balanced_nominal_refuses_a_bad_field_by_name(field, value):
    with pytest.raises(LoptUserError, match=f"{field}="):
        BalancedNominalLOpt(**{field: value})
