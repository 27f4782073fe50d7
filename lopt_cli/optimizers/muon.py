r"""Muon (Jordan et al. 2024) as a hand-designed optimizer: ``load_optimizer("muon", T)``.

Every 2-D parameter (a dense layer's matrix) steps along its Nesterov momentum (β = 0.95)
orthogonalised by five Newton–Schulz iterations, :math:`O \approx U V^\top` of
:math:`M = U \Sigma V^\top`; every other parameter (biases, scales, vectors, convolution
kernels, a scalar) steps with NAdam (Adam with Nesterov's momentum, β₁ = 0.9, β₂ = 0.999, as
``optax.contrib.muon`` does). Both at one learning rate: the
orthogonalised step is rescaled to an RMS of ``consistent_rms`` = 0.2 per matrix (Moonlight,
Liu et al. 2025), about an Adam step's, so one rate (1e-3 by default, constant) suits both and a
leaderboard's tuned factor scales both alike. ``optax.contrib.muon`` does the work.
"""
from __future__ import annotations

import jax
import optax
from optax import contrib

from lopt_cli.optimizers.base import accepting_extra_args

MUON_RMS = 0.2  # the RMS of an orthogonalised step per matrix, before the learning rate


def muon(learning_rate: float | jax.Array = 1e-3) -> optax.GradientTransformationExtraArgs:
    """Muon on matrices and NAdam elsewhere at one constant ``learning_rate`` (see the module's
    docstring), accepting ``loss=`` / ``valid_loss=``."""
    return accepting_extra_args(contrib.muon(learning_rate, beta=0.95, nesterov=True,
                                             consistent_rms=MUON_RMS))
