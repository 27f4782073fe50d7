r"""Named, pure per-tensor input features of the hierarchical learned optimizer's LSTM
(Metz et al. 2020, §3; :class:`~lopt_cli.optimizers.hierarchical.HierarchicalLOpt`).

Every feature is a function ``f(ctx: LSTMContext) -> (k,)`` of one tensor (and of the
quantities shared by all tensors: the losses and the cross-tensor channel). The LSTM sees one
row per tensor: the concatenation of these features, stacked over tensors into ``(T, F_l)``.
With ``D`` accumulator decays, ``L`` loss-statistics decays, ``E`` extra MLP outputs and a
cross-tensor channel of width ``C``:

=================  =========  ===============================================================
name               k          value
=================  =========  ===============================================================
``momentum``       3D         per decay: ``lc(|mean m|)``, ``sign(mean m)``, ``lc(var m)``
``rms``            2D         per decay: ``lc(mean v)``, ``lc(var v)``
``value``          3          ``lc(|mean p|)``, ``sign(mean p)``, ``lc(var p)``
``log_norms``      2          ``lc(||p||)``, ``lc(||g||)`` (L2 norms over the tensor)
``shape``          6          ``0.1 log n`` and a one-hot of the rank (0, 1, 2, 3, >= 4)
``time``           12         :func:`features.step_embedding_feature` and ``progress_feature``
``train_loss``     L + 1      z-score of the loss per timescale, clipped; "loss seen" flag
``valid_loss``     2L + 1     validation loss against the training-loss statistics
                              (z-score and relative gap, clipped); "available" flag
``extra_outputs``  E          previous step's per-tensor mean of the MLP's extra outputs
``cross_tensor``   C          previous step's mean over all tensors of a projection of the
                              LSTM outputs (the only channel between tensors)
=================  =========  ===============================================================

where ``lc(x) = 0.1 clip(log(|x| + 1e-8), -18, 5)`` ("log-clipped", in ``[-1.8, 0.5]``) and
``var x = max(E[x^2] - E[x]^2, 0) + 1e-4 E[x^2]`` (one pass; the relative floor hides float32
cancellation noise).

The loss features come from :func:`observe_losses`: exponentially weighted means
:math:`\mu_\beta` and variances of the training loss at several decays
(:func:`update_loss_stats`), giving standard deviations :math:`\sigma_\beta` (floored at
``1e-3 |mu|``). The training-loss feature is
:math:`\mathrm{clip}((\ell - \mu_\beta)/\sigma_\beta, \pm 5)` against the statistics *before*
the current loss (so a spike stands out); the validation-loss feature is
:math:`\mathrm{clip}((\ell_v - \mu_\beta)/\sigma_\beta, \pm 5)` and
:math:`\mathrm{clip}((\ell_v - \mu_\beta)/|\mu_\beta|, \pm 5)` against the statistics *after* it:
the generalisation gap in units of the training-loss noise and relative to the loss. A missing
(``None``) or non-finite loss leaves the statistics untouched and feeds zeros with flag 0.

Feature counts are derived with :func:`jax.eval_shape` (:func:`lstm_feature_widths`,
:func:`num_lstm_features`); nothing hard-codes the LSTM's input width.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt_cli.optimizers import features as feats

LOG_CLIP = (-18.0, 5.0)
LOSS_CLIP = 5.0  # |z-score| and |relative gap| bound
LOSS_STD_FLOOR = 1e-3  # sigma >= 1e-3 |mu| (+ 1e-8): a constant loss gives a finite z-score
VAR_FLOOR = 1e-4  # relative floor of the one-pass tensor variances
MAX_RANK = 4  # ranks >= MAX_RANK share the last one-hot column


class LossStats(NamedTuple):
    """Exponentially weighted mean and variance of the training loss, one entry per decay."""

    mean: jax.Array  # (L,) float32
    var: jax.Array  # (L,) float32
    count: jax.Array  # float32 scalar: number of finite losses seen


class LossFeatures(NamedTuple):
    """Loss-derived inputs shared by every tensor (see :func:`observe_losses`)."""

    train_z: jax.Array  # (L,)
    train_available: jax.Array  # scalar, 0 or 1
    valid_z: jax.Array  # (L,)
    valid_gap: jax.Array  # (L,)
    valid_available: jax.Array  # scalar, 0 or 1


class LSTMContext(NamedTuple):
    """Float32 inputs of one tensor's LSTM row (accumulators already updated).

    The accumulators enter through their first two moments over the tensor (per decay),
    which the optimizer gets without extra passes over its state (see
    :class:`~lopt_cli.optimizers.hierarchical.HierarchicalLOpt`)."""

    grad: jax.Array  # shape S, clipped
    param: jax.Array  # shape S
    momentum_mean: jax.Array  # (D,) mean over the tensor of m_beta
    momentum_mean_sq: jax.Array  # (D,) mean over the tensor of m_beta^2
    rms_mean: jax.Array  # (D,)
    rms_mean_sq: jax.Array  # (D,)
    count: jax.Array  # int32 scalar, step number (0-based)
    num_steps: jax.Array  # scalar horizon, possibly traced
    loss: LossFeatures
    extra_mean: jax.Array  # (E,) this tensor's previous mean of the MLP's extra outputs
    cross_tensor: jax.Array  # (C,) previous mean over tensors of the LSTM projection


# ------------------------------------------------------------------------------ losses


def init_loss_stats(num_decays: int) -> LossStats:
    """No loss seen yet."""
    zeros = jnp.zeros((num_decays,), jnp.float32)
    return LossStats(zeros, zeros, jnp.zeros((), jnp.float32))


def loss_moments(stats: LossStats) -> tuple[jax.Array, jax.Array]:
    """Mean and (floored) standard deviation per decay, each ``(L,)``."""
    floor = LOSS_STD_FLOOR * jnp.abs(stats.mean) + 1e-8
    return stats.mean, jnp.sqrt(stats.var + floor * floor)


def update_loss_stats(stats: LossStats, loss: jax.Array, decays: jax.Array) -> LossStats:
    r"""Adds a (finite) loss with the numerically stable exponentially weighted recursion

    .. math:: \delta = \ell - \mu, \quad \mu \leftarrow \mu + (1-b)\,\delta, \quad
              \sigma^2 \leftarrow b\,(\sigma^2 + (1-b)\,\delta^2), \qquad
              b = \min(\beta, n / (n + 1))

    (``n`` losses seen before): the plain running mean and variance until ``1/(n+1)`` falls
    below ``1 - beta``, so no bias correction is needed, and no ``E[l^2] - E[l]^2``
    cancellation."""
    b = jnp.minimum(decays, stats.count / (stats.count + 1.0))
    delta = loss - stats.mean
    return LossStats(stats.mean + (1.0 - b) * delta, b * (stats.var + (1.0 - b) * delta**2),
                     stats.count + 1.0)


def _as_float(value: Any) -> jax.Array:
    if value is None:
        return jnp.asarray(jnp.nan, jnp.float32)
    return jnp.asarray(value, jnp.float32).reshape(())


def observe_losses(
    stats: LossStats, loss: Any, valid_loss: Any, decays: Sequence[float]
) -> tuple[LossFeatures, LossStats]:
    """Loss features of this step and the statistics updated with ``loss``.

    ``loss``/``valid_loss`` may be ``None``, NaN or infinite: they are then "not available"
    (zeros and flag 0) and the statistics do not move.
    """
    decays = jnp.asarray(decays, jnp.float32)
    loss, valid_loss = _as_float(loss), _as_float(valid_loss)
    loss_ok = jnp.isfinite(loss)
    safe_loss = jnp.where(loss_ok, loss, 0.0)

    mean, std = loss_moments(stats)
    train_ok = loss_ok & (stats.count > 0)
    train_z = jnp.where(train_ok, jnp.clip((safe_loss - mean) / std, -LOSS_CLIP, LOSS_CLIP), 0.0)

    updated = update_loss_stats(stats, safe_loss, decays)
    new_stats = jax.tree.map(lambda new, old: jnp.where(loss_ok, new, old), updated, stats)
    mean, std = loss_moments(new_stats)
    valid_ok = jnp.isfinite(valid_loss) & (new_stats.count > 0)
    safe_valid = jnp.where(valid_ok, valid_loss, 0.0)
    gap = safe_valid - mean
    valid_z = jnp.where(valid_ok, jnp.clip(gap / std, -LOSS_CLIP, LOSS_CLIP), 0.0)
    valid_gap = jnp.where(
        valid_ok, jnp.clip(gap / (jnp.abs(mean) + 1e-8), -LOSS_CLIP, LOSS_CLIP), 0.0)
    features = LossFeatures(train_z, train_ok.astype(jnp.float32), valid_z, valid_gap,
                            valid_ok.astype(jnp.float32))
    return features, new_stats


# ----------------------------------------------------------------------- tensor features


def log_clip(x: jax.Array) -> jax.Array:
    """``0.1 * clip(log(|x| + 1e-8), -18, 5)``."""
    return 0.1 * jnp.clip(jnp.log(jnp.abs(x) + feats.LOG_EPS), *LOG_CLIP)


def _variance(mean: jax.Array, mean_sq: jax.Array) -> jax.Array:
    """``max(E[x^2] - E[x]^2, 0) + VAR_FLOOR * E[x^2]``: the relative floor hides the
    float32 cancellation noise of the one-pass formula (about 1e-7 E[x^2])."""
    return jnp.maximum(mean_sq - mean * mean, 0.0) + VAR_FLOOR * mean_sq


def momentum_feature(ctx: LSTMContext) -> jax.Array:
    """Per decay: ``lc(|mean m|)``, ``sign(mean m)``, ``lc(var m)``: ``(3D,)``."""
    mean = ctx.momentum_mean
    return jnp.concatenate([log_clip(mean), jnp.sign(mean),
                            log_clip(_variance(mean, ctx.momentum_mean_sq))])


def rms_feature(ctx: LSTMContext) -> jax.Array:
    """Per decay: ``lc(mean v)``, ``lc(var v)``: ``(2D,)``."""
    return jnp.concatenate([log_clip(ctx.rms_mean),
                            log_clip(_variance(ctx.rms_mean, ctx.rms_mean_sq))])


def value_feature(ctx: LSTMContext) -> jax.Array:
    """``lc(|mean p|)``, ``sign(mean p)``, ``lc(var p)``: ``(3,)``."""
    mean = jnp.mean(ctx.param)
    var = _variance(mean, jnp.mean(jnp.square(ctx.param)))
    return jnp.stack([log_clip(mean), jnp.sign(mean), log_clip(var)])


def log_norms_feature(ctx: LSTMContext) -> jax.Array:
    """``lc(||p||_2)``, ``lc(||g||_2)``: ``(2,)``, as ``0.1 clip(log(||x||^2 + 1e-16) / 2)``
    (no square root: finite gradients for an all-zero tensor)."""
    squares = jnp.stack([jnp.sum(jnp.square(ctx.param)), jnp.sum(jnp.square(ctx.grad))])
    return 0.1 * jnp.clip(0.5 * jnp.log(squares + feats.LOG_EPS**2), *LOG_CLIP)


def shape_feature(ctx: LSTMContext) -> jax.Array:
    """``0.1 log n`` and a one-hot of ``min(rank, MAX_RANK)``: ``(MAX_RANK + 2,)``."""
    log_size = jnp.asarray([0.1 * math.log(max(ctx.param.size, 1))], jnp.float32)
    rank = jax.nn.one_hot(min(ctx.param.ndim, MAX_RANK), MAX_RANK + 1, dtype=jnp.float32)
    return jnp.concatenate([log_size, rank])


def time_feature(ctx: LSTMContext) -> jax.Array:
    """Step embedding and horizon progress, reusing :mod:`features`: ``(12,)``."""
    tctx = feats.TensorContext(ctx.count, ctx.num_steps, ctx.grad, ctx.param)
    return jnp.concatenate([feats.step_embedding_feature(tctx), feats.progress_feature(tctx)])


def train_loss_feature(ctx: LSTMContext) -> jax.Array:
    """Clipped z-score of the training loss per timescale and the "seen" flag: ``(L + 1,)``."""
    return jnp.concatenate([ctx.loss.train_z, ctx.loss.train_available[None]])


def valid_loss_feature(ctx: LSTMContext) -> jax.Array:
    """Validation loss against the training-loss statistics (z-score, relative gap) and the
    "available" flag: ``(2L + 1,)``."""
    return jnp.concatenate([ctx.loss.valid_z, ctx.loss.valid_gap,
                            ctx.loss.valid_available[None]])


def extra_outputs_feature(ctx: LSTMContext) -> jax.Array:
    """Previous step's per-tensor mean of the MLP's extra outputs: ``(E,)``."""
    return ctx.extra_mean


def cross_tensor_feature(ctx: LSTMContext) -> jax.Array:
    """Previous step's mean over tensors of the LSTM-output projection: ``(C,)``."""
    return ctx.cross_tensor


LSTMFeature = Callable[[LSTMContext], jax.Array]
LSTM_FEATURES: tuple[tuple[str, LSTMFeature], ...] = (
    ("momentum", momentum_feature),
    ("rms", rms_feature),
    ("value", value_feature),
    ("log_norms", log_norms_feature),
    ("shape", shape_feature),
    ("time", time_feature),
    ("train_loss", train_loss_feature),
    ("valid_loss", valid_loss_feature),
    ("extra_outputs", extra_outputs_feature),
    ("cross_tensor", cross_tensor_feature),
)


def lstm_features(ctx: LSTMContext) -> jax.Array:
    """All LSTM inputs of one tensor, concatenated: ``(F_l,)``."""
    return jnp.concatenate([fn(ctx) for _, fn in LSTM_FEATURES])


# ----------------------------------------------------------------------------------- counts


def _dummy_context(num_decays: int, num_loss_decays: int, num_extra: int,
                   cross_size: int) -> LSTMContext:
    def f32(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    scalar_i = jax.ShapeDtypeStruct((), jnp.int32)
    loss = LossFeatures(f32(num_loss_decays), f32(), f32(num_loss_decays),
                        f32(num_loss_decays), f32())
    stats = [f32(num_decays)] * 4
    return LSTMContext(f32(2, 3), f32(2, 3), *stats, scalar_i, scalar_i, loss, f32(num_extra),
                       f32(cross_size))


def lstm_feature_widths(num_decays: int, num_loss_decays: int, num_extra: int,
                        cross_size: int) -> dict[str, int]:
    """Width ``k`` of every named LSTM feature, by shape inference."""
    ctx = _dummy_context(num_decays, num_loss_decays, num_extra, cross_size)
    return {name: jax.eval_shape(fn, ctx).shape[-1] for name, fn in LSTM_FEATURES}


def num_lstm_features(num_decays: int, num_loss_decays: int, num_extra: int,
                      cross_size: int) -> int:
    """``F_l``: the LSTM's input width."""
    ctx = _dummy_context(num_decays, num_loss_decays, num_extra, cross_size)
    return jax.eval_shape(lstm_features, ctx).shape[-1]
