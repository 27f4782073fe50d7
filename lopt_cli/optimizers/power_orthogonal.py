r"""One warm-started power step towards the polar factor :math:`U V^\top` of a matrix, from a
stored right basis (Dion, Ahn et al. 2025, arXiv 2504.05295; shared by the hand-designed
``dion`` and ``muon_nominal``'s ``orthogonaliser: power``).

For a tall :math:`B \in \mathbb{R}^{A \times C}` (:math:`A \ge C`) and a basis
:math:`Q \in \mathbb{R}^{C \times r}`:
:math:`P = \mathrm{orth}(B Q)` (reduced QR), :math:`R = B^\top P`,
:math:`Q \leftarrow \mathrm{col\_unit}(R)`, direction :math:`P Q^\top`. If :math:`Q` spans the
right singular vectors of :math:`B = U \Sigma V^\top` then :math:`P = U`, :math:`R = V\Sigma`
and the direction is :math:`U V^\top`; repeated on a fixed :math:`B` it is a subspace
iteration. A column of :math:`R` below ``COLUMN_FLOOR`` of :math:`\lVert B \rVert_F` is not
blown up to unit length (Newton–Schulz likewise leaves such singular values small), and a zero
:math:`B` keeps its basis and steps zero. Cost: two :math:`A \times C \times r` products for
:math:`P` and :math:`R`, one for the direction, and a QR of :math:`A \times r`, against
Newton–Schulz's fifteen products of :math:`A \times C \times C`. (Two cubic Newton–Schulz
steps on unit columns instead of the QR keep the cost in products but let the columns collapse
onto the top singular vector: a subspace iteration needs its orthogonalisation exact.)
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

COLUMN_FLOOR = 1e-3  # relative to the matrix's Frobenius norm


def dion_rank(shape: tuple[int, ...], rank_fraction: float) -> int:
    """The rank :math:`r = \\lceil f \\min(A, C) \\rceil` (at least 1) of a matrix of ``shape``."""
    return max(1, math.ceil(rank_fraction * min(shape)))


def initial_basis(matrix: jax.Array, rank_fraction: float) -> jax.Array:
    """A fixed random :math:`C \\times r` basis with unit columns for ``matrix``'s tall form."""
    columns = min(matrix.shape)
    draw = jax.random.normal(jax.random.key(0), (columns, dion_rank(matrix.shape, rank_fraction)),
                             matrix.dtype)
    return draw / jnp.linalg.norm(draw, axis=0, keepdims=True)


def power_direction(b: jax.Array, basis: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One warm-started power step of a tall ``b`` from its stored ``basis`` (module
    docstring): ``(P Qᵀ, P, R, new Q)``; the step is zero and the basis kept where ``b`` is
    zero."""
    p = jnp.linalg.qr((b @ basis).astype(jnp.float32))[0].astype(b.dtype)  # LAPACK: no bf16
    r = b.T @ p
    b_norm = jnp.linalg.norm(b)
    column_norms = jnp.linalg.norm(r, axis=0, keepdims=True)
    new_basis = jnp.where(b_norm > 0, r / jnp.maximum(column_norms, COLUMN_FLOOR * b_norm + 1e-30),
                          basis)
    return jnp.where(b_norm > 0, p @ new_basis.T, 0.0), p, r, new_basis
