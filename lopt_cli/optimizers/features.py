r"""Named, pure input features of per-parameter learned optimizers (Metz et al. 2020, §3).

Two kinds of features feed the per-parameter MLP of :class:`~lopt_cli.optimizers.mlp_lopt.MLPLOpt`:

*Per-parameter* features, each a function ``f(ctx: ParamContext) -> (k,) + param.shape``
(feature-major: one contiguous row per input of the MLP, see :func:`raw_param_features`):

============================  =====  ===================================================
name                          k      value
============================  =====  ===================================================
``grad``                      1      :math:`g` (clipped, see :func:`clip_by_running_rms`)
``param``                     1      :math:`p`
``log_abs_param``             1      :math:`\log(|p| + \epsilon)`, clipped to ``[-18, 5]``
``momentum``                  D      :math:`m_\beta \leftarrow \beta m_\beta + (1-\beta) g`
``rms``                       D      :math:`v_\beta \leftarrow \beta v_\beta + (1-\beta) g^2`
``rsqrt_rms``                 D      :math:`1 / \sqrt{v_\beta + \epsilon}`
``momentum_rsqrt_rms``        D      :math:`m_\beta / \sqrt{v_\beta + \epsilon}`
============================  =====  ===================================================

with one row per decay :math:`\beta` (``D = len(decays)``). The stacked ``(F_p,) + S`` array
is normalised feature by feature by its second moment over the tensor
(:func:`second_moment_normalize`), so the MLP sees unit-scale inputs whatever the tensor's scale.

*Per-tensor* features, each ``f(ctx: TensorContext) -> (k,)``, identical for every parameter of a
tensor (the MLP adds them as a per-tensor bias of its first layer, which equals tiling them and
concatenating, at a fraction of the cost):

==================  =====  =================================================================
``step_embedding``  9      :math:`\tanh(t / P - 1)` for periods ``P`` in ``TIME_PERIODS``
``progress``        3      :math:`(r, \sin \pi r, \cos \pi r)` with :math:`r = t / T` (horizon T)
``tensor_stats``    3      :math:`0.1\,(\log n, \log \mathrm{rms}(p), \log \mathrm{rms}(g))`
==================  =====  =================================================================

Feature counts are *derived* from these declared lists with :func:`jax.eval_shape`
(:func:`num_param_features`, :func:`num_tensor_features`, :func:`num_features`); nothing else
in the code base hard-codes an input width. For the default five decays: 23 + 15 = 38.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt_cli.optimizers import cpu_tuning

RMS_EPS = 1e-8  # inside 1/sqrt(v + eps)
LOG_EPS = 1e-8  # inside log(|p| + eps)
NORM_EPS = 1e-12  # inside the second-moment normaliser; |normalised| <= sqrt(size) regardless
TIME_PERIODS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


class ParamContext(NamedTuple):
    """Float32 inputs of one tensor: gradient, value and the *updated* accumulators."""

    grad: jax.Array  # shape S
    param: jax.Array  # shape S
    momentum: jax.Array  # shape (D,) + S
    rms: jax.Array  # shape (D,) + S


class TensorContext(NamedTuple):
    """Per-tensor inputs: step number ``t`` (0-based), horizon ``T`` and the tensor itself."""

    count: jax.Array  # int32 scalar
    num_steps: jax.Array  # scalar, possibly traced
    grad: jax.Array  # shape S, float32
    param: jax.Array  # shape S, float32


# --------------------------------------------------------------------------- accumulators


def accumulate(
    momentum: jax.Array, rms: jax.Array, grad: jax.Array, decays: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Updates all timescales at once (decays on the leading axis, no bias correction).

    .. math:: m_\beta \leftarrow \beta m_\beta + (1-\beta) g, \qquad
              v_\beta \leftarrow \beta v_\beta + (1-\beta) g^2
    """
    beta = decays.reshape(decays.shape + (1,) * grad.ndim)
    return beta * momentum + (1.0 - beta) * grad, beta * rms + (1.0 - beta) * grad * grad


def clip_by_running_rms(
    grad: jax.Array, mean_sq: jax.Array, count: jax.Array, clip_mult: float, decay: float
) -> tuple[jax.Array, jax.Array]:
    r"""Clips a gradient against its tensor's running RMS, then updates that RMS.

    With :math:`s_t` an exponential moving average (decay ``decay``) of the tensor's mean
    squared clipped gradient and :math:`\hat s_t = s_t / (1 - \mathrm{decay}^t)` its
    bias-corrected value,

    .. math:: \tilde g = \mathrm{clip}(g, \pm c \sqrt{\hat s_t}) \quad (t > 0), \qquad
              s_{t+1} = \mathrm{decay}\, s_t + (1-\mathrm{decay})\, \overline{\tilde g^2}.

    The first gradient (``t = 0``) and ``clip_mult <= 0`` pass unclipped.

    Returns:
      ``(clipped_grad, new_mean_sq)``.
    """
    if clip_mult > 0:
        t = count.astype(jnp.float32)
        corrected = mean_sq / jnp.maximum(1.0 - decay**t, 1e-12)
        bound = jnp.where(count > 0, clip_mult * jnp.sqrt(corrected), jnp.inf)
        grad = jnp.clip(grad, -bound, bound)
    new_mean_sq = decay * mean_sq + (1.0 - decay) * jnp.mean(jnp.square(grad))
    return grad, new_mean_sq


def second_moment_normalize(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    r"""Normalises each feature (leading axis) by its RMS over the tensor (the other axes).

    .. math:: \hat x_{f,i} = x_{f,i} \,/\, \sqrt{\mathrm{mean}_i\, x_{f,i}^2 + \epsilon}
    """
    axes = tuple(range(1, x.ndim))
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + eps)


# --------------------------------------------------------------------- per-parameter features


def grad_feature(ctx: ParamContext) -> jax.Array:
    """The (clipped) gradient, ``(1,) + S``."""
    return ctx.grad[None]


def param_feature(ctx: ParamContext) -> jax.Array:
    """The parameter value, ``(1,) + S``."""
    return ctx.param[None]


def log_abs_param_feature(ctx: ParamContext) -> jax.Array:
    """``clip(log(|p| + eps), -18, 5)``, ``(1,) + S``."""
    return jnp.clip(jnp.log(jnp.abs(ctx.param) + LOG_EPS), -18.0, 5.0)[None]


def momentum_feature(ctx: ParamContext) -> jax.Array:
    """Momentum at every decay, ``(D,) + S``."""
    return ctx.momentum


def rms_feature(ctx: ParamContext) -> jax.Array:
    """Second-moment accumulators at every decay, ``(D,) + S``."""
    return ctx.rms


def rsqrt_rms_feature(ctx: ParamContext) -> jax.Array:
    """``1/sqrt(v + eps)`` at every decay, ``(D,) + S``."""
    return cpu_tuning.inverse_sqrt(ctx.rms + RMS_EPS)


def momentum_rsqrt_rms_feature(ctx: ParamContext) -> jax.Array:
    """Adam-like ``m/sqrt(v + eps)`` at every decay, ``(D,) + S``."""
    return ctx.momentum * cpu_tuning.inverse_sqrt(ctx.rms + RMS_EPS)


ParamFeature = Callable[[ParamContext], jax.Array]
PARAM_FEATURES: tuple[tuple[str, ParamFeature], ...] = (
    ("grad", grad_feature),
    ("param", param_feature),
    ("log_abs_param", log_abs_param_feature),
    ("momentum", momentum_feature),
    ("rms", rms_feature),
    ("rsqrt_rms", rsqrt_rms_feature),
    ("momentum_rsqrt_rms", momentum_rsqrt_rms_feature),
)


def raw_param_features(ctx: ParamContext) -> jax.Array:
    """All per-parameter features of a tensor (or of a block of its entries), stacked
    feature-major and *not* normalised: ``(F_p,) + S``."""
    return cpu_tuning.stack_rows([fn(ctx) for _, fn in PARAM_FEATURES])


def feature_moments(ctx: ParamContext) -> jax.Array:
    r"""Per-feature second moments :math:`\mathrm{mean}_i\, x_{f,i}^2` over the tensor,
    ``(F_p,)``, computed one feature function at a time so that XLA fuses each reduction (over
    contiguous rows) with its producer and the ``(F_p,) + S`` array is never materialised."""
    moments = []
    for _, fn in PARAM_FEATURES:
        block = fn(ctx)
        moments.append(jnp.mean(jnp.square(block).reshape(block.shape[0], -1), axis=1))
    return jnp.concatenate(moments)


def feature_scales(ctx: ParamContext, eps: float = NORM_EPS) -> jax.Array:
    r"""Per-feature normalisers :math:`(\mathrm{mean}_i\, x_{f,i}^2 + \epsilon)^{-1/2}`,
    ``(F_p,)`` (see :func:`feature_moments`)."""
    return scales_from_moments(feature_moments(ctx), eps)


def scales_from_moments(moments: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """:func:`feature_scales` from already computed :func:`feature_moments`."""
    return jax.lax.rsqrt(moments + eps)


def param_features(ctx: ParamContext) -> jax.Array:
    """All per-parameter features of a tensor, stacked and normalised: ``(F_p,) + S``.

    Equal to ``second_moment_normalize(raw_param_features(ctx))``."""
    x = raw_param_features(ctx)
    return x * feature_scales(ctx).reshape((-1,) + (1,) * (x.ndim - 1))


# ------------------------------------------------------------------------ per-tensor features


def step_embedding_feature(ctx: TensorContext) -> jax.Array:
    r""":math:`\tanh(t/P - 1)` for every period in ``TIME_PERIODS``: ``(9,)``, in ``(-1, 1)``."""
    t = ctx.count.astype(jnp.float32)
    return jnp.tanh(t / jnp.asarray(TIME_PERIODS, jnp.float32) - 1.0)


def progress_feature(ctx: TensorContext) -> jax.Array:
    r"""Fraction of the horizon done :math:`r = \mathrm{clip}(t/T, 0, 1)`:
    :math:`(r, \sin \pi r, \cos \pi r)`, ``(3,)``. ``T`` may be traced (vmapped horizons)."""
    t = ctx.count.astype(jnp.float32)
    horizon = jnp.maximum(jnp.asarray(ctx.num_steps, jnp.float32), 1.0)
    r = jnp.clip(t / horizon, 0.0, 1.0)
    return jnp.stack([r, jnp.sin(jnp.pi * r), jnp.cos(jnp.pi * r)])


def tensor_stats_feature(ctx: TensorContext) -> jax.Array:
    r""":math:`0.1 \cdot (\log n, \log(\mathrm{rms}(p) + \epsilon), \log(\mathrm{rms}(g) +
    \epsilon))` for a tensor of ``n`` parameters, ``(3,)``."""
    log_size = jnp.asarray(math.log(max(ctx.param.size, 1)), jnp.float32)
    log_p = jnp.log(jnp.sqrt(jnp.mean(jnp.square(ctx.param))) + LOG_EPS)
    log_g = jnp.log(jnp.sqrt(jnp.mean(jnp.square(ctx.grad))) + LOG_EPS)
    return 0.1 * jnp.stack([log_size, log_p, log_g])


TensorFeature = Callable[[TensorContext], jax.Array]
TENSOR_FEATURES: tuple[tuple[str, TensorFeature], ...] = (
    ("step_embedding", step_embedding_feature),
    ("progress", progress_feature),
    ("tensor_stats", tensor_stats_feature),
)


def tensor_features(ctx: TensorContext) -> jax.Array:
    """All per-tensor features, concatenated: ``(F_t,)`` (not normalised; already O(1))."""
    return jnp.concatenate([fn(ctx) for _, fn in TENSOR_FEATURES])


# ----------------------------------------------------------------------------------- counts


def _dummy_contexts(num_decays: int) -> tuple[ParamContext, TensorContext]:
    vec = jax.ShapeDtypeStruct((2,), jnp.float32)
    acc = jax.ShapeDtypeStruct((num_decays, 2), jnp.float32)
    scalar_i = jax.ShapeDtypeStruct((), jnp.int32)
    return ParamContext(vec, vec, acc, acc), TensorContext(scalar_i, scalar_i, vec, vec)


def feature_widths(decays: Sequence[float]) -> dict[str, int]:
    """Width ``k`` of every named feature (per-parameter, then per-tensor), by shape inference."""
    param_ctx, tensor_ctx = _dummy_contexts(len(decays))
    widths = {n: jax.eval_shape(fn, param_ctx).shape[0] for n, fn in PARAM_FEATURES}
    for name, fn in TENSOR_FEATURES:
        widths[name] = jax.eval_shape(fn, tensor_ctx).shape[-1]
    return widths


def param_feature_rows(decays: Sequence[float]) -> dict[str, slice]:
    """Row range of every named per-parameter feature within :func:`param_features`."""
    param_ctx, _ = _dummy_contexts(len(decays))
    rows, start = {}, 0
    for name, fn in PARAM_FEATURES:
        width = jax.eval_shape(fn, param_ctx).shape[0]
        rows[name] = slice(start, start + width)
        start += width
    return rows


def num_param_features(decays: Sequence[float]) -> int:
    """``F_p``: width of :func:`param_features` for these decays (23 for five decays)."""
    param_ctx, _ = _dummy_contexts(len(decays))
    return jax.eval_shape(param_features, param_ctx).shape[0]


def num_tensor_features() -> int:
    """``F_t``: width of :func:`tensor_features` (15)."""
    _, tensor_ctx = _dummy_contexts(1)
    return jax.eval_shape(tensor_features, tensor_ctx).shape[-1]


def num_features(decays: Sequence[float]) -> int:
    """Total MLP input width ``F = F_p + F_t`` (38 for the default five decays)."""
    return num_param_features(decays) + num_tensor_features()
