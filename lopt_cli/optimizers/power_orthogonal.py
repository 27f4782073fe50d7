r"""One warm-started power step towards the polar factor :math:`U V^\top` of a matrix, from a
stored right basis (Dion, Ahn et al. 2025, arXiv 2504.05295; shared by the hand-designed
``dion`` and ``muon_nominal``'s ``orthogonaliser: power``).

For a tall :math:`B \in \mathbb{R}^{A \times C}` (:math:`A \ge C`) and a basis :math:`Q \in
\mathbb{R}^{C \times r}`: :math:`P = \mathrm{orth}(B Q)` (:func:`orthonormal_columns`: a reduced
QR's :math:`Q`), :math:`R = B^\top P`, :math:`Q \leftarrow \mathrm{col\_unit}(R)`, direction
:math:`P Q^\top`. If :math:`Q` spans the right singular vectors of :math:`B = U \Sigma V^\top`
then :math:`P = U`, :math:`R = V\Sigma` and the direction is :math:`U V^\top`; repeated on a
fixed :math:`B` it is a subspace iteration. A column of :math:`R` below ``COLUMN_FLOOR`` of
:math:`\lVert B \rVert_F` is not blown up to unit length (Newton–Schulz likewise leaves such
singular values small), and a zero :math:`B` keeps its basis and steps zero. Cost: two :math:`A
\times C \times r` products for :math:`P` and :math:`R`, one for the direction, and Gram–Schmidt
on :math:`A \times r`, against Newton–Schulz's fifteen products of :math:`A \times C \times C`.
(Two cubic Newton–Schulz steps on unit columns instead of the QR keep the cost in products but
let the columns collapse onto the top singular vector: a subspace iteration needs its
orthogonalisation exact.)
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

COLUMN_FLOOR = 1e-3  # relative to the matrix's Frobenius norm
DEPENDENT = 1e-5  # a Gram–Schmidt column this small against its own norm is dependent


def dion_rank(shape: tuple[int, ...], rank_fraction: float) -> int:
    """The rank :math:`r = \\lceil f \\min(A, C) \\rceil` (at least 1) of a matrix of ``shape``."""
    return max(1, math.ceil(rank_fraction * min(shape)))


def initial_basis(matrix: jax.Array, rank_fraction: float) -> jax.Array:
    """A fixed random :math:`C \\times r` basis with unit columns for ``matrix``'s tall form."""
    columns = min(matrix.shape)
    draw = jax.random.normal(jax.random.key(0), (columns, dion_rank(matrix.shape, rank_fraction)),
                             matrix.dtype)
    return draw / jnp.linalg.norm(draw, axis=0, keepdims=True)


def orthonormal_columns(a: jax.Array) -> jax.Array:
    r"""The :math:`Q` of a reduced QR of ``a`` (:math:`A \times r`, :math:`A \ge r`), up to
    the signs of its columns, by classical Gram–Schmidt run twice per column ("twice is
    enough": orthogonal to float rounding); a column within ``DEPENDENT`` of the span of the
    ones before it comes out zero. Matrix-vector products only: no LAPACK call, whose batched
    CPU kernel deadlocks XLA's thread pool when two start at once (jaxlib 0.10;
    :mod:`~lopt_cli.evaluation.lapack_guard`). Vmapped over 30 matrices it took 11 ms against
    ``jnp.linalg.qr``'s 80 ms at 256 × 64 and 26 against 131 at 128 × 128, 0.84 against 0.55 at
    256 × 8 (a scratch timing on 2 cores beside an evaluation); one matrix alone at full rank,
    its columns one after another are slower than the QR (``dion``'s step:
    docs/recipe_variants/cheap_muon_directions.md)."""
    index = jnp.arange(a.shape[1])

    def column(j, q):
        original = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
        earlier = (index < j).astype(a.dtype)
        v = original
        for _ in range(2):
            v = v - q @ ((q.T @ v) * earlier)
        norm = jnp.linalg.norm(v)
        kept = norm > DEPENDENT * jnp.linalg.norm(original)
        return q.at[:, j].set(jnp.where(kept, v / jnp.where(kept, norm, 1.0), 0.0))

    return jax.lax.fori_loop(0, a.shape[1], column, jnp.zeros_like(a))


def power_direction(b: jax.Array, basis: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One warm-started power step of a tall ``b`` from its stored ``basis`` (module
    docstring): ``(P Qᵀ, P, R, new Q)``; the step is zero and the basis kept where ``b`` is
    zero."""
    p = orthonormal_columns((b @ basis).astype(jnp.float32)).astype(b.dtype)
    r = b.T @ p
    b_norm = jnp.linalg.norm(b)
    column_norms = jnp.linalg.norm(r, axis=0, keepdims=True)
    new_basis = jnp.where(b_norm > 0, r / jnp.maximum(column_norms, COLUMN_FLOOR * b_norm + 1e-30),
                          basis)
    return jnp.where(b_norm > 0, p @ new_basis.T, 0.0), p, r, new_basis
