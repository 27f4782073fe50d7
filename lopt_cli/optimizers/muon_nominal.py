r"""``muon_nominal``: :mod:`adam_nominal` with Muon's direction as the nominal term of every
matrix (Jordan et al. 2024; the RMS match of Moonlight, Liu et al. 2025).

For a 2-D parameter :math:`P \in \mathbb{R}^{A \times B}` with Adam's moments as in
:mod:`~lopt_cli.optimizers.adam_nominal`, the nominal term is the Nesterov momentum
:math:`N = \beta_1 \hat m + (1 - \beta_1) g` orthogonalised,

.. math::
    O = \mathrm{NS}_5\big(N / \lVert N \rVert_F\big) \approx U V^\top
    \quad (N = U \Sigma V^\top), \qquad
    \text{nominal} = \rho \sqrt{\max(A, B)}\; O,

(:math:`\rho` = ``muon_rms`` = 0.2: every matrix steps with an RMS of 0.2 × the rate, about an
Adam step's on noisy gradients), and the step is
:math:`-e^{s_\theta + \gamma c_\theta(x)}\,\text{nominal}` with the same learned per-tensor scale
:math:`s` and per-parameter factor :math:`c` (``correction="multiplicative"``), read from the same
features as ``adam_nominal``'s. Every other parameter steps exactly as in ``adam_nominal``.
Untrained (:math:`s = c = 0`) it is Muon on matrices and Adam elsewhere, on the configured
schedule.

The Newton–Schulz iteration is the quintic one of Muon,
:math:`X \leftarrow aX + (bXX^\top + c(XX^\top)^2)X`, :math:`(a, b, c) = (3.4445, -4.7750,
2.0315)`, on the wide orientation (:math:`X X^\top` of the smaller side).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt_cli.optimizers import adam_nominal as an
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.per_tensor import FieldRule, TensorInput

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


def orthogonalised(matrix: jax.Array, steps: int = 5) -> jax.Array:
    """:math:`\\approx U V^\\top` of ``matrix`` (singular values pushed towards 1 by ``steps``
    quintic Newton–Schulz iterations, as Muon's)."""
    a, b, c = NS_COEFFICIENTS
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if tall else matrix
    x = x / (jnp.linalg.norm(x) + NS_EPS)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def _positive(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


@dataclasses.dataclass(frozen=True)
class MuonNominalLOpt(an.AdamNominalLOpt):
    """``adam_nominal`` whose matrices step along Muon's direction (module docstring).

    Attributes (beside :class:`~lopt_cli.optimizers.adam_nominal.AdamNominalLOpt`'s):
      muon_rms: :math:`\\rho`, the RMS of an orthogonalised step per unit rate.
      ns_steps: Newton–Schulz iterations.
    """

    muon_rms: float = 0.2
    ns_steps: int = 5
    correction: str = "multiplicative"

    FIELD_RULES = {**an.AdamNominalLOpt.FIELD_RULES,
                   "muon_rms": FieldRule(_positive, "a positive number"),
                   "ns_steps": per_tensor.POSITIVE_INT}

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: an.AdamNominalTensorState
                    ) -> tuple[jax.Array, an.AdamNominalTensorState]:
        if jnp.ndim(x.param) != 2 or self.beta2_fast is not None:
            return super().step_tensor(theta, x, state)
        g, p = x.grad, x.param
        t = x.count.astype(jnp.float32) + 1.0
        m = self.beta1 * state.momentum + (1.0 - self.beta1) * g
        v = self.beta2 * state.rms + (1.0 - self.beta2) * jnp.square(g)
        m_hat, v_hat = self.first_moment(m, g, t), v / (1.0 - self.beta2**t)
        tensor_x = feats.tensor_features(feats.TensorContext(x.count, x.num_steps, g, p))
        heads = self.network.apply(theta, [], tensor_x, method=an.AdamNominalNetwork.heads)
        channels = an.nominal_features(g, p, m_hat, v_hat)
        log_scale, correction, _ = self.network.apply(theta, channels, tensor_x,
                                                      method=an.AdamNominalNetwork.channels)
        nesterov = self.beta1 * m + (1.0 - self.beta1) * g
        nominal = (self.muon_rms * jnp.sqrt(float(max(p.shape)))
                   * orthogonalised(nesterov, self.ns_steps))
        gamma_c = self.correction_scale * correction
        if self.correction == "multiplicative":
            direction = -jnp.exp(log_scale + gamma_c) * nominal
        else:
            direction = -jnp.exp(log_scale) * (nominal + gamma_c)
        if self.learned_decay:
            direction = direction - an.learned_decay(heads[an.DECAY]) * p
        return direction, an.AdamNominalTensorState(m, v, state.rms_fast, state.grad_mean_sq)
