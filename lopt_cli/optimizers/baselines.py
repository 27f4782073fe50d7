r"""Hand-designed baselines, as ``optax.GradientTransformationExtraArgs`` that accept (and
ignore) ``loss=`` and ``valid_loss=``.

*AdamLR* (Metz et al. 2020): Adam whose learning rate is tuned per task on a log grid,

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
    \quad \Delta p_t = -\eta\, \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}.

The evaluator vmaps :func:`adam_with_lr` over :func:`adam_lr_grid` inside one jit::

    rates = jnp.asarray(adam_lr_grid())
    curves = jax.vmap(lambda lr: train(adam_with_lr(lr)))(rates)
"""
from __future__ import annotations

import jax
import numpy as np
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers.base import accepting_extra_args


def adam(
    learning_rate: float | jax.Array = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    """Adam (``optax.adam``) accepting ``loss=`` / ``valid_loss=``; every argument may be traced."""
    return accepting_extra_args(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def adam_with_lr(learning_rate: float | jax.Array) -> optax.GradientTransformationExtraArgs:
    """Adam with default betas and a (possibly traced, e.g. vmapped) learning rate."""
    return adam(learning_rate)


def adam_lr_grid(min_lr: float = 1e-4, max_lr: float = 1e-1, num: int = 7) -> np.ndarray:
    """``num`` learning rates spaced evenly in log between ``min_lr`` and ``max_lr`` (float32).

    >>> adam_lr_grid(1e-3, 1e-1, 3)
    array([0.001, 0.01 , 0.1  ], dtype=float32)
    """
    if not 0 < min_lr <= max_lr or num < 1:
        raise LoptUserError(
            f"adam_lr_grid: need 0 < min_lr <= max_lr and num >= 1, got min_lr={min_lr}, "
            f"max_lr={max_lr}, num={num}")
    return np.geomspace(min_lr, max_lr, num).astype(np.float32)


def sgd(learning_rate: float | jax.Array = 1e-2) -> optax.GradientTransformationExtraArgs:
    r"""Plain SGD, :math:`\Delta p = -\eta g`, accepting ``loss=`` / ``valid_loss=``."""
    return accepting_extra_args(optax.sgd(learning_rate))
