r"""Cautious masking (Liang et al. 2024, "Cautious Optimizers", arXiv 2411.16085):
``load_optimizer("cautious_adam", T)`` and ``adam_nominal``'s ``cautious`` field.

A step direction :math:`d` (the update before the minus sign and the rate: Adam's
:math:`\hat m / (\sqrt{\hat v} + \epsilon)`) keeps only the entries that agree in sign with the
current gradient :math:`g`, and is rescaled per tensor so that its mean magnitude is kept:

.. math::
    d \leftarrow d \odot \frac{\phi}{\max(\overline{\phi},\ \phi_\text{min})},
    \qquad \phi = \mathbb{1}[d \odot g > 0], \quad
    \overline{\phi} = \text{mean of } \phi \text{ over the tensor}.

Where the momentum points one way and the newest gradient the other, the step would raise the
loss to first order; the mask skips it. Element-wise work, the cost class of Adam's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.base import accepting_extra_args

MIN_KEPT_FRACTION = 1e-3  # the floor of the kept fraction in the rescaling


def cautious_mask(direction: jax.Array, grad: jax.Array) -> jax.Array:
    """``direction`` with the entries whose sign differs from ``grad``'s zeroed and the rest
    scaled by ``1 / max(kept fraction, MIN_KEPT_FRACTION)`` (module docstring)."""
    agree = (direction * grad > 0).astype(direction.dtype)
    kept = jnp.maximum(jnp.mean(agree), MIN_KEPT_FRACTION)
    return direction * agree / kept


def scale_by_cautious_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                           ) -> optax.GradientTransformation:
    """Adam's direction (``optax.scale_by_adam``) with :func:`cautious_mask` applied per leaf
    against the incoming gradient."""
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def update_fn(grads, state, params=None):
        directions, state = adam.update(grads, state, params)
        return jax.tree.map(cautious_mask, directions, grads), state

    return optax.GradientTransformation(adam.init, update_fn)


def cautious_adam(learning_rate: float | jax.Array = 1e-3) -> optax.GradientTransformationExtraArgs:
    """Adam (β₁ = 0.9, β₂ = 0.999) with the cautious mask, at one constant ``learning_rate``,
    accepting ``loss=`` / ``valid_loss=``."""
    return accepting_extra_args(optax.chain(scale_by_cautious_adam(),
                                            optax.scale_by_learning_rate(learning_rate)))
