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
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import adam_nominal as an
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers import hierarchical_features as hfeats
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers import power_orthogonal as power
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.cautious import cautious_mask
from lopt_cli.optimizers.per_tensor import FieldRule, TensorInput

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ORTHOGONALISERS = ("newton_schulz", "power")
NS_EPS = 1e-7
NS_STEPS = 5  # Muon's


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


def tall(matrix: jax.Array) -> jax.Array:
    """``matrix`` with at least as many rows as columns (transposed if wide)."""
    return matrix.T if matrix.shape[0] < matrix.shape[1] else matrix


def unit(matrix: jax.Array) -> jax.Array:
    """``matrix`` scaled to unit Frobenius norm (zero stays zero)."""
    return matrix / (jnp.linalg.norm(matrix) + NS_EPS)


def newton_schulz_factor(x: jax.Array, steps: int = 5) -> jax.Array:
    r"""The :math:`B \times B` factor :math:`R` with :math:`x R = \mathrm{NS}_{steps}(x)` for a
    tall (:func:`tall`) unit-Frobenius ``x`` (:math:`A \times B`): Muon's quintic iteration
    :math:`X \leftarrow X p(X^\top X)`, :math:`p(G) = aI + bG + cG^2`, multiplies on the right
    by a polynomial of the Gram matrix, so on the Gram side
    :math:`R_0 = I,\ R_{j+1} = R_j\, p(R_j G_0 R_j)`, :math:`G_0 = x^\top x`."""
    a, b, c = NS_COEFFICIENTS
    gram = x.T @ x
    eye = jnp.eye(x.shape[1], dtype=x.dtype)
    factor = eye
    for _ in range(steps):
        g = factor @ gram @ factor
        factor = factor @ (a * eye + b * g + c * g @ g)
    return factor


def untall(matrix: jax.Array, like: jax.Array) -> jax.Array:
    """``matrix`` (a :func:`tall` one) back in ``like``'s orientation."""
    return matrix if matrix.shape == like.shape else matrix.T


def refreshed_factor(unit_tall: jax.Array, old_factor: jax.Array, refresh: jax.Array,
                     steps: int) -> jax.Array:
    """:func:`newton_schulz_factor` of ``unit_tall`` where ``refresh``, else ``old_factor``
    (a ``lax.cond``: one branch runs, except under ``vmap``)."""
    return jax.lax.cond(refresh, functools.partial(newton_schulz_factor, steps=steps),
                        lambda _: old_factor, unit_tall)


def _only_none(value: object) -> None:
    if value is not None:
        raise ValueError(value)


def one_second_moment(name: str) -> FieldRule:
    """The rule of ``beta2_fast`` for a nominal-direction variant: only null."""
    return FieldRule(_only_none, f"null ({name} has one second moment)")


def _optional_positive_int(value: object) -> int | None:
    return None if value is None else per_tensor.POSITIVE_INT.normalise(value)


class MuonNominalState(NamedTuple):
    """:class:`~lopt_cli.optimizers.adam_nominal.AdamNominalState` and, per matrix, the stored
    Newton–Schulz factor (:func:`newton_schulz_factor`; zeros of shape ``()`` elsewhere and when
    ``ns_refresh_every`` is 1)."""

    momentum: optax.Updates
    rms: optax.Updates
    rms_fast: optax.Updates
    grad_mean_sq: optax.Updates
    ns_factor: optax.Updates
    loss_stats: hfeats.LossStats
    count: jax.Array


class MuonNominalTensorState(NamedTuple):
    momentum: jax.Array
    rms: jax.Array
    rms_fast: jax.Array
    grad_mean_sq: jax.Array
    ns_factor: jax.Array


@dataclasses.dataclass(frozen=True)
class MuonNominalLOpt(an.AdamNominalLOpt):
    """``adam_nominal`` whose matrices step along Muon's direction (module docstring).

    Attributes (beside :class:`~lopt_cli.optimizers.adam_nominal.AdamNominalLOpt`'s):
      muon_rms: :math:`\\rho`, the RMS of an orthogonalised step per unit rate.
      ns_steps: Newton–Schulz iterations.
      ns_block: ``None`` (whole matrices) or the largest group of rows orthogonalised
        together (:func:`orthogonalised`): caps the update's cost on wide layers.
      ns_refresh_every: 1 (every step orthogonalised afresh, Muon's) or :math:`k`: the Gram-side
        factor :math:`R` (:func:`newton_schulz_factor`) of the unit-Frobenius Nesterov momentum
        is recomputed at steps :math:`0, k, 2k, \\dots` and reused in between,
        :math:`O_t = \\mathrm{tall}(N_t / \\lVert N_t \\rVert_F)\\, R`: one product per step
        instead of ``ns_steps`` iterations of three (a single run's saving: under ``vmap`` the
        refresh's ``lax.cond`` computes both branches).
      orthogonaliser: ``"newton_schulz"`` (Muon's) or ``"power"``: one warm-started power
        step per training step from a stored right basis
        (:func:`~lopt_cli.optimizers.power_orthogonal.power_direction`, Dion's at full rank),
        which tends to :math:`UV^\\top` as the basis tracks the momentum's right singular
        vectors; three products and a Gram–Schmidt per step instead of ``ns_steps``
        iterations of three products.
      ns_max_side: ``None`` (every matrix) or the largest smaller side of a matrix that steps
        along Muon's direction; a matrix whose smaller side :math:`k` exceeds it steps exactly
        as in ``adam_nominal`` (Newton–Schulz costs :math:`\\approx 30 k^2 L` per step for a
        :math:`k \\times L` matrix against the gradient's :math:`6 B k L` at batch :math:`B`:
        the narrow matrices are the cheap ones).

    ``beta2_fast`` must stay ``None``: the matrices' step has one second moment;
    ``ns_block`` must stay ``None`` with ``ns_refresh_every`` above 1 or the power
    orthogonaliser, and ``ns_refresh_every`` 1 with the power one.
    """

    muon_rms: float = 0.2
    ns_steps: int = NS_STEPS
    ns_block: int | None = None
    ns_refresh_every: int = 1
    orthogonaliser: str = "newton_schulz"
    ns_max_side: int | None = None
    correction: str = "multiplicative"

    State = MuonNominalState
    TensorState = MuonNominalTensorState
    FIELD_RULES = {**an.AdamNominalLOpt.FIELD_RULES,
                   "muon_rms": per_tensor.POSITIVE_FINITE,
                   "ns_steps": per_tensor.POSITIVE_INT,
                   "ns_block": FieldRule(_optional_positive_int, "null or a positive int"),
                   "ns_refresh_every": per_tensor.POSITIVE_INT,
                   "orthogonaliser": per_tensor.one_of(ORTHOGONALISERS),
                   "ns_max_side": FieldRule(_optional_positive_int, "null or a positive int"),
                   "beta2_fast": one_second_moment("muon_nominal")}

    def __post_init__(self):
        super().__post_init__()
        if self.ns_refresh_every > 1 and self.ns_block is not None:
            raise LoptUserError(f"{type(self).__name__}: ns_block={self.ns_block} needs "
                                f"ns_refresh_every=1 (got {self.ns_refresh_every}): a stored "
                                "factor is of whole matrices")
        if self.orthogonaliser == "power" and (self.ns_block is not None
                                               or self.ns_refresh_every != 1):
            raise LoptUserError(f"{type(self).__name__}: orthogonaliser=power needs ns_block="
                                f"null and ns_refresh_every=1 (got {self.ns_block}, "
                                f"{self.ns_refresh_every}): it keeps its own basis")
        if self.orthogonaliser == "power" and self.ns_steps != NS_STEPS:
            raise LoptUserError(f"{type(self).__name__}: orthogonaliser=power takes one power "
                                f"step, not Newton–Schulz iterations: leave ns_steps at "
                                f"{NS_STEPS} (got {self.ns_steps})")

    def steps_along_muon(self, param: jax.Array) -> bool:
        """Whether ``param`` is a matrix that takes Muon's direction (``ns_max_side``)."""
        return jnp.ndim(param) == 2 and (self.ns_max_side is None
                                         or min(param.shape) <= self.ns_max_side)

    def init_tensor_state(self, param: jax.Array) -> MuonNominalTensorState:
        matrix = self.steps_along_muon(param)
        if matrix and self.orthogonaliser == "power":
            factor = power.initial_basis(param.astype(jnp.float32), 1.0)
        elif matrix and self.ns_refresh_every > 1:
            factor = jnp.eye(tall(param).shape[1], dtype=jnp.float32)
        else:
            factor = per_tensor.float32_zeros(())
        return MuonNominalTensorState(*super().init_tensor_state(param), factor)

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: MuonNominalTensorState
                    ) -> tuple[jax.Array, MuonNominalTensorState]:
        if not self.steps_along_muon(x.param):
            step, adam = super().step_tensor(theta, x, an.AdamNominalTensorState(*state[:4]))
            return step, MuonNominalTensorState(*adam, state.ns_factor)
        scale = self.muon_rms * jnp.sqrt(float(max(x.param.shape)))

        def nominal_of(nesterov):
            if self.orthogonaliser == "power":
                direction, _, _, basis = power.power_direction(tall(nesterov), state.ns_factor)
                return scale * untall(direction, nesterov), {"ns_factor": basis}
            if self.ns_refresh_every == 1:
                return scale * orthogonalised(nesterov, self.ns_steps, self.ns_block), {}
            unit_tall = unit(tall(nesterov))
            factor = refreshed_factor(unit_tall, state.ns_factor,
                                      x.count % self.ns_refresh_every == 0, self.ns_steps)
            return scale * untall(unit_tall @ factor, nesterov), {"ns_factor": factor}

        return step_matrix(self, theta, x, state, nominal_of)


def step_matrix(lopt: an.AdamNominalLOpt, theta: MetaParams, x: TensorInput, state: NamedTuple,
                nominal_of: Callable[[jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
                ) -> tuple[jax.Array, NamedTuple]:
    r"""A matrix's step: :math:`-e^{s_\theta + \gamma c_\theta(x)}` (or the additive
    correction) times the nominal term that ``nominal_of`` makes of the Nesterov momentum
    :math:`\beta_1 m + (1 - \beta_1) g` (with the state fields it changes besides the moments),
    with ``adam_nominal``'s moments, features and heads; shared by the nominal-direction
    variants (``muon_nominal``, ``balanced_nominal``). ``state``: a tensor state with
    ``adam_nominal``'s fields first. With ``cautious`` the nominal term is masked against the
    gradient (:func:`~lopt_cli.optimizers.cautious.cautious_mask`), as ``adam_nominal``'s."""
    g, p = x.grad, x.param
    t = x.count.astype(jnp.float32) + 1.0
    m = lopt.beta1 * state.momentum + (1.0 - lopt.beta1) * g
    v = lopt.beta2 * state.rms + (1.0 - lopt.beta2) * jnp.square(g)
    m_hat, v_hat = lopt.first_moment(m, g, t), v / (1.0 - lopt.beta2**t)
    tensor_x = feats.tensor_features(feats.TensorContext(x.count, x.num_steps, g, p))
    heads = lopt.network.apply(theta, [], tensor_x, method=an.AdamNominalNetwork.heads)
    channels = an.nominal_features(g, p, m_hat, v_hat)
    log_scale, correction, _ = lopt.network.apply(theta, channels, tensor_x,
                                                  method=an.AdamNominalNetwork.channels)
    nominal, changed = nominal_of(lopt.beta1 * m + (1.0 - lopt.beta1) * g)
    if lopt.cautious:
        nominal = cautious_mask(nominal, g)
    direction = lopt.learned_step(nominal, log_scale, correction, heads, p)
    return direction, state._replace(momentum=m, rms=v, **changed)
