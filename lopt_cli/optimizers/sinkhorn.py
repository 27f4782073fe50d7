r"""``sinkhorn``: Muon's recipe with a cheap balancing of each matrix's momentum in place of its
orthogonalisation (after SinkGD, Scetbon et al. 2025): ``load_optimizer("sinkhorn", T)``.

Muon's orthogonalised direction :math:`U V^\top` has every singular value 1; on a CPU its five
Newton–Schulz iterations cost many matrix products per step. Here every 2-D parameter steps
along its Nesterov momentum :math:`N` (β = 0.95, as ``muon``) balanced by alternating row and
column normalisation (a Sinkhorn iteration on the norms),

.. math::
    X \leftarrow \sqrt{B}\,\operatorname{diag}(\lVert X_{i,:}\rVert)^{-1} X, \qquad
    X \leftarrow \sqrt{A}\,X \operatorname{diag}(\lVert X_{:,j}\rVert)^{-1}
    \qquad (X \in \mathbb{R}^{A \times B}, \text{ repeated } L \text{ times}),

which leaves every row and column with about the same norm (RMS 1): :math:`O(AB)`
element-wise work, the class of Adam's. The step is :math:`-\eta\,\rho X` with
:math:`\rho` = 0.2 (``muon``'s RMS per matrix); every other parameter (biases, scales,
convolution kernels, vectors) steps with NAdam (β₁ = 0.9, β₂ = 0.999) at the same constant rate
:math:`\eta`, as ``muon``'s do.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.matrix_split import on_matrices_nadam_elsewhere
from lopt_cli.optimizers.muon import MUON_RMS

SINKHORN_ITERATIONS = 5
NORM_EPS = 1e-8


def sinkhorn_balanced(matrix: jax.Array, iterations: int = SINKHORN_ITERATIONS) -> jax.Array:
    """``matrix`` (:math:`A \\times B`) after ``iterations`` rounds of row normalisation to
    norm :math:`\\sqrt{B}` then column normalisation to norm :math:`\\sqrt{A}` (RMS ≈ 1); a zero
    row or column stays zero."""
    rows, cols = matrix.shape
    x = matrix
    for _ in range(iterations):
        x = x * (jnp.sqrt(cols) / (jnp.linalg.norm(x, axis=1, keepdims=True) + NORM_EPS))
        x = x * (jnp.sqrt(rows) / (jnp.linalg.norm(x, axis=0, keepdims=True) + NORM_EPS))
    return x


def scale_by_sinkhorn(beta: float = 0.95, iterations: int = SINKHORN_ITERATIONS
                      ) -> optax.GradientTransformation:
    r"""Nesterov momentum :math:`N = \beta m + g` (:math:`m \leftarrow \beta m + g`) of every
    leaf, balanced by :func:`sinkhorn_balanced` and scaled to RMS :math:`\rho`; for 2-D leaves
    only (``sinkhorn`` routes the others to NAdam)."""
    balance = optax.stateless(lambda updates, params: jax.tree.map(
        lambda n: MUON_RMS * sinkhorn_balanced(n, iterations), updates))
    return optax.chain(optax.trace(decay=beta, nesterov=True), balance)


def sinkhorn(learning_rate: float | jax.Array = 1e-3) -> optax.GradientTransformationExtraArgs:
    """Sinkhorn-balanced Nesterov momentum on matrices and NAdam elsewhere at one constant
    ``learning_rate`` (module docstring), accepting ``loss=`` / ``valid_loss=``."""
    return on_matrices_nadam_elsewhere(scale_by_sinkhorn(), learning_rate)
