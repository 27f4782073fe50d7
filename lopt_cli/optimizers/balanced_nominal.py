r"""``balanced_nominal``: :mod:`muon_nominal` with the Nesterov momentum of every matrix balanced
by rows and columns (:func:`~lopt_cli.optimizers.sinkhorn.sinkhorn_balanced`) instead of
orthogonalised: the nominal term

.. math::
    \text{nominal} = \rho\, \mathrm{SK}_L\big(\beta_1 m + (1 - \beta_1) g\big),

where :math:`\mathrm{SK}_L` alternates :math:`L` times row normalisation to norm
:math:`\sqrt{B}` and column normalisation to norm :math:`\sqrt{A}` of an :math:`A \times B`
matrix (RMS ≈ 1), and :math:`\rho` = 0.2. Element-wise work only, :math:`O(AB)` per step
(Newton–Schulz is :math:`O(AB\min(A, B))` in matrix products). The learned per-tensor scale,
the per-parameter correction, the schedule and every non-matrix parameter are exactly
``muon_nominal``'s (i.e. ``adam_nominal``'s). Untrained it is the hand-designed ``sinkhorn``'s
matrix step with :math:`\beta_1` = 0.9 on matrices and Adam elsewhere, on the configured
schedule.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt_cli.optimizers import adam_nominal as an
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.muon_nominal import one_second_moment, step_matrix
from lopt_cli.optimizers.per_tensor import TensorInput
from lopt_cli.optimizers.sinkhorn import SINKHORN_ITERATIONS, sinkhorn_balanced


@dataclasses.dataclass(frozen=True)
class BalancedNominalLOpt(an.AdamNominalLOpt):
    """``adam_nominal`` whose matrices step along their row/column-balanced Nesterov momentum
    (module docstring).

    Attributes (beside :class:`~lopt_cli.optimizers.adam_nominal.AdamNominalLOpt`'s):
      matrix_rms: :math:`\\rho`, the RMS of a balanced matrix step per unit rate.
      balance_iterations: :math:`L`, rounds of row-then-column normalisation.

    ``beta2_fast`` must stay ``None``: the matrices' step has one second moment.
    """

    matrix_rms: float = 0.2
    balance_iterations: int = SINKHORN_ITERATIONS
    correction: str = "multiplicative"

    FIELD_RULES = {**an.AdamNominalLOpt.FIELD_RULES,
                   "matrix_rms": per_tensor.POSITIVE_FINITE,
                   "balance_iterations": per_tensor.POSITIVE_INT,
                   "beta2_fast": one_second_moment("balanced_nominal")}

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: an.AdamNominalTensorState
                    ) -> tuple[jax.Array, an.AdamNominalTensorState]:
        if jnp.ndim(x.param) != 2:
            return super().step_tensor(theta, x, state)
        return step_matrix(self, theta, x, state, lambda nesterov: (
            self.matrix_rms * sinkhorn_balanced(nesterov, self.balance_iterations), {}))
