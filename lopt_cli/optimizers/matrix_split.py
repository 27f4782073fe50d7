"""Hand-designed optimizers of Muon's shape: one transform for every matrix, NAdam elsewhere."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.base import accepting_extra_args


def matrix_labels(params: optax.Params) -> optax.Params:
    """``"matrix"`` for every 2-D leaf of ``params``, ``"other"`` for the rest."""
    return jax.tree.map(lambda p: "matrix" if jnp.ndim(p) == 2 else "other", params)


def on_matrices_nadam_elsewhere(matrix_direction: optax.GradientTransformation,
                                learning_rate: float | jax.Array
                                ) -> optax.GradientTransformationExtraArgs:
    """``matrix_direction`` times ``learning_rate`` on every matrix, NAdam (β₁ = 0.9,
    β₂ = 0.999) at the same rate on every other leaf, accepting ``loss=`` / ``valid_loss=``."""
    matrices = optax.chain(matrix_direction, optax.scale_by_learning_rate(learning_rate))
    return accepting_extra_args(optax.multi_transform(
        {"matrix": matrices, "other": optax.nadam(learning_rate)}, matrix_labels))
