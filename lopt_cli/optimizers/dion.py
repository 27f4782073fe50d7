r"""``dion``: Muon's recipe with the orthogonalisation replaced by one warm-started power
iteration per step (Dion, Ahn et al. 2025, arXiv 2504.05295): ``load_optimizer("dion", T)``.

For every matrix, in its tall orientation :math:`B \in \mathbb{R}^{A \times C}`
(:math:`A \ge C`; a wide matrix is transposed), with a stored right basis
:math:`Q \in \mathbb{R}^{C \times r}` (:math:`r = \lceil f\,C \rceil`, ``rank_fraction`` f):

.. math::
    B = M + g, \quad P = \mathrm{orth}(B Q), \quad R = B^\top P, \quad
    M \leftarrow B - (1 - \mu) P R^\top, \quad Q \leftarrow \mathrm{col\_unit}(R),

and the step is :math:`P Q^\top` scaled to an RMS of :math:`\rho` = 0.2 times the rate
(``muon``'s). :math:`\mathrm{orth}` is a reduced QR's :math:`Q` (by Gram–Schmidt). When
:math:`Q` spans the right singular vectors of :math:`B = U \Sigma V^\top`, :math:`P = U`,
:math:`R = V\Sigma` and the step is Muon's :math:`U V^\top`; one power step per training step
tracks them as the momentum moves. At full rank (:math:`f = 1`) :math:`P P^\top B = B`, so the
error feedback is heavy-ball momentum :math:`M = \mu B`; at lower rank the directions not
stepped stay in :math:`M` until they are. The power step (its floor on negligible columns, its
zero step on a zero :math:`B`) is :mod:`~lopt_cli.optimizers.power_orthogonal`'s. A step costs
three :math:`A \times C \times r` products and Gram–Schmidt on :math:`A \times r`, against
Newton–Schulz's fifteen :math:`A \times C \times C` products (five iterations of three).
Every other parameter steps with NAdam at the same constant rate, as ``muon``'s.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.lazy_muon import rms_matched
from lopt_cli.optimizers.matrix_split import on_matrices_nadam_elsewhere
from lopt_cli.optimizers.muon_nominal import tall, untall
from lopt_cli.optimizers.power_orthogonal import initial_basis, power_direction

BETA = 0.95  # Muon's momentum
RANK_FRACTION = 1.0


class DionState(NamedTuple):
    momentum: optax.Params  # per matrix, its tall orientation
    basis: optax.Params  # per matrix, C x r


def power_step(gradient: jax.Array, momentum: jax.Array, basis: jax.Array, beta: float
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Dion step of a tall matrix (module docstring): ``(P Qᵀ, new M, new Q)``."""
    b = momentum + gradient
    direction, p, r, new_basis = power_direction(b, basis)
    return direction, b - (1.0 - beta) * p @ r.T, new_basis


def scale_by_dion(beta: float = BETA, rank_fraction: float = RANK_FRACTION
                  ) -> optax.GradientTransformation:
    """Every 2-D leaf's Dion step (module docstring), scaled to RMS :math:`\\rho`."""

    def init(params):
        return DionState(jax.tree.map(lambda p: jnp.zeros_like(tall(p)), params),
                         jax.tree.map(lambda p: initial_basis(p, rank_fraction), params))

    def update(updates, state, params=None):
        del params
        results = jax.tree.map(lambda g, m, q: power_step(tall(g), m, q, beta),
                               updates, state.momentum, state.basis)
        directions, momentum, basis = jax.tree.transpose(
            jax.tree.structure(updates), jax.tree.structure((0, 0, 0)), results)
        steps = jax.tree.map(lambda d, g: rms_matched(untall(d, g)), directions, updates)
        return steps, DionState(momentum, basis)

    return optax.GradientTransformation(init, update)


def dion(learning_rate: float | jax.Array = 1e-3, rank_fraction: float = RANK_FRACTION
         ) -> optax.GradientTransformationExtraArgs:
    """Dion on matrices and NAdam elsewhere at one constant ``learning_rate`` (module
    docstring), accepting ``loss=`` / ``valid_loss=``."""
    return on_matrices_nadam_elsewhere(scale_by_dion(rank_fraction=rank_fraction),
                                       learning_rate)
