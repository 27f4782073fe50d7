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


def orthogonalised(matrix: jax.Array, steps: int = 5, block: int | None = None) -> jax.Array:
    """:math:`\\approx U V^\\top` of ``matrix`` (singular values pushed towards 1 by ``steps``
    quintic Newton–Schulz iterations, as Muon's).

    With ``block``, the smaller side is cut into :math:`\\lceil k / \\text{block} \\rceil`
    equal groups of at most ``block`` rows (or columns) and each group is orthogonalised on its
    own: the cost falls from :math:`\\approx 6k^2 L` to :math:`\\approx 6\\,\\text{block}\\,kL`
    per step for a :math:`k \\times L` matrix (:math:`k \\le L`). A matrix whose smaller side is
    at most ``block`` is orthogonalised whole, exactly as without it.
    """
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if tall else matrix
    rows, cols = x.shape
    groups = 1 if block is None else -(-rows // block)
    size = -(-rows // groups)
    if groups > 1:
        padded = jnp.pad(x, ((0, groups * size - rows), (0, 0))).reshape(groups, size, cols)
        x = _newton_schulz(padded, steps).reshape(-1, cols)[:rows]
    else:
        x = _newton_schulz(x, steps)
    return x.T if tall else x


def _newton_schulz(x: jax.Array, steps: int) -> jax.Array:
    """Muon's quintic iteration on each trailing ``(rows, cols)`` matrix of ``x`` (rows ≤ cols),
    each first scaled to unit Frobenius norm; zero rows stay zero."""
    a, b, c = NS_COEFFICIENTS
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + NS_EPS)
    for _ in range(steps):
        gram = x @ jnp.swapaxes(x, -1, -2)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x


def _only_none(value: object) -> None:
    if value is not None:
        raise ValueError(value)


def _optional_positive_int(value: object) -> int | None:
    return None if value is None else per_tensor.POSITIVE_INT.normalise(value)


@dataclasses.dataclass(frozen=True)
class MuonNominalLOpt(an.AdamNominalLOpt):
    """``adam_nominal`` whose matrices step along Muon's direction (module docstring).

    Attributes (beside :class:`~lopt_cli.optimizers.adam_nominal.AdamNominalLOpt`'s):
      muon_rms: :math:`\\rho`, the RMS of an orthogonalised step per unit rate.
      ns_steps: Newton–Schulz iterations.
      ns_block: ``None`` (whole matrices) or the largest group of rows orthogonalised
        together (:func:`orthogonalised`): caps the update's cost on wide layers.

    ``beta2_fast`` must stay ``None``: the matrices' step has one second moment.
    """

    muon_rms: float = 0.2
    ns_steps: int = 5
    ns_block: int | None = None
    correction: str = "multiplicative"

    FIELD_RULES = {**an.AdamNominalLOpt.FIELD_RULES,
                   "muon_rms": per_tensor.POSITIVE_FINITE,
                   "ns_steps": per_tensor.POSITIVE_INT,
                   "ns_block": FieldRule(_optional_positive_int, "null or a positive int"),
                   "beta2_fast": FieldRule(_only_none, "null (muon_nominal has one second "
                                           "moment)")}

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: an.AdamNominalTensorState
                    ) -> tuple[jax.Array, an.AdamNominalTensorState]:
        if jnp.ndim(x.param) != 2:
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
                   * orthogonalised(nesterov, self.ns_steps, self.ns_block))
        gamma_c = self.correction_scale * correction
        if self.correction == "multiplicative":
            direction = -jnp.exp(log_scale + gamma_c) * nominal
        else:
            direction = -jnp.exp(log_scale) * (nominal + gamma_c)
        if self.learned_decay:
            direction = direction - an.learned_decay(heads[an.DECAY]) * p
        return direction, an.AdamNominalTensorState(m, v, state.rms_fast, state.grad_mean_sq)
