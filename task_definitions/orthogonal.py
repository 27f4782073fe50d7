r"""Orthogonal initialisation without LAPACK, for the recurrent kernels of the RNN tasks.

``jax.nn.initializers.orthogonal`` takes the Q of a Householder QR of a Gaussian matrix (LAPACK
``geqrf``). Batched over tasks on CPU (a vmapped population, a PES reset inside the step) that
kernel splits its batch over XLA's intra-op thread pool and waits for it from a thread of that
same pool; with both of a 2-core machine's pool threads waiting there, meta-training hangs for
good (seen with ``task_family=celo_mix_seq``: every thread idle in ``ParallelBatchMap``).

:func:`orthogonal` draws the same Gaussian matrix :math:`Z` from the same key and
orthonormalises its columns by classical Gram–Schmidt applied twice ("CGS2"), column by column:

.. math:: v \leftarrow z_j - Q Q^\top z_j,\quad v \leftarrow v - Q Q^\top v,\quad
          q_j = v / \lVert v\rVert,

which is the Q of :math:`Z = QR` with a positive diagonal in R: the matrix QR with the sign
correction jax applies returns, up to float rounding. Plain matrix products only.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def orthonormal_columns(z: jax.Array) -> jax.Array:
    """The Q (same shape, orthonormal columns) of ``z = QR`` with diag(R) > 0; ``z`` is
    ``[rows, cols]`` with rows >= cols, of full column rank."""

    def next_column(j, q):
        v = z[:, j]
        for _ in range(2):  # a second pass restores orthogonality lost to rounding
            v = v - q @ (q.T @ v)  # q's columns from j on are still zero
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, z.shape[1], next_column, jnp.zeros_like(z))


def orthogonal(scale: float = 1.0, column_axis: int = -1):
    """A drop-in for ``jax.nn.initializers.orthogonal(scale, column_axis)`` (same draws, same
    matrices up to rounding) that needs no LAPACK call."""

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError("orthogonal initializer requires at least a 2D shape")
        n_rows, n_cols = math.prod(shape) // shape[column_axis], shape[column_axis]
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = orthonormal_columns(z)
        if n_rows < n_cols:
            q = q.T
        q = jnp.reshape(q, tuple(np.delete(shape, column_axis)) + (shape[column_axis],))
        return jnp.asarray(scale, dtype) * jnp.moveaxis(q, -1, column_axis)

    return init
