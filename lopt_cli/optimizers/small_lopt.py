r"""A low-overhead learned optimizer: a tiny per-parameter MLP on Adafactor-style features.

For a tensor :math:`W` with gradient :math:`g` (clipped against its running RMS, see
:func:`features.clip_by_running_rms`), momentum decays :math:`\beta_1 \dots \beta_M` and a
second-moment decay :math:`\beta_2`:

.. math::

    m_i &\leftarrow \beta_i m_i + (1-\beta_i)\, g \qquad (i = 1 \dots M) \\
    R &\leftarrow \beta_2 R + (1-\beta_2)\, \mathrm{mean}_{\text{cols}}\, g^2, \quad
    C \leftarrow \beta_2 C + (1-\beta_2)\, \mathrm{mean}_{\text{rows}}\, g^2
        \qquad (\ge 2\text{-D: the last two axes}) \\
    \hat v_{ij} &= \frac{R_i C_j}{\mathrm{mean}(R)\,(1 - \beta_2^t)}
        \quad (\ge 2\text{-D}), \qquad
    \hat v = \frac{v}{1 - \beta_2^t}, \ v \leftarrow \beta_2 v + (1-\beta_2) g^2
        \quad (< 2\text{-D}) \\
    x &= \mathrm{clip}\Big(\frac{g}{\sqrt{\hat v}},\ \frac{m_i}{(1-\beta_i^t)\sqrt{\hat v}},\
         \frac{p}{\mathrm{rms}(p)}\Big) \in \mathbb{R}^{2+M}, \qquad
    (d, a) = \mathrm{MLP}_\theta(x, x_\text{tensor}) \\
    \Delta p &= -\lambda_1 \, d \, \exp(\lambda_2 a)

The factored :math:`\hat v` (Shazeer & Stern 2018) is exact whenever :math:`g^2` is rank one
in the last two axes. The MLP has ``hidden_sizes`` ReLU layers (one of 4 units by default); the
per-tensor features of :mod:`features` enter as a per-tensor bias of its first layer. Features
and layers are lists of tensor-shaped columns (:class:`ColumnsDense`, the variables of an
``nn.Dense``), so XLA fuses the per-parameter network and its features into one elementwise
loop instead of building an ``(N, K)`` array and calling a matmul on 4-wide operands.

Cost, default config (``M = 2``, one hidden layer of ``H = 4``, so ``K = 2 + M = 4``):

* **state**: ``M`` floats per parameter (momentum) for tensors of rank >= 2, plus
  ``(rows + cols) / n`` for the factored second moment; ``M + 1`` for vectors and scalars;
  plus one float per tensor (clipping RMS) and the step count. About **2 floats/parameter**
  for a model made of matrices (Adam: 2), versus 10 for MLPLOpt.
* **compute**: the MLP, ``2 K H + H`` (first layer with biases) ``+ H`` (ReLU)
  ``+ 4 H + 2`` (output) = 58 FLOPs; features and accumulators 27 (clipping and ``g^2`` 3,
  factored means 3, :math:`\hat v` and its rsqrt 3, momenta 3 each, clipped feature products
  3 each); the step 5: **90 FLOPs/parameter** (:attr:`SmallLOpt.flops_per_param`, any config;
  XLA's count of the lowered update: 95). Adam: about 12; MLPLOpt about 4k.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.mlp_lopt import CLIP_DECAY

V_EPS = 1e-16  # inside 1/sqrt(v_hat + eps): Adam's eps = 1e-8 on the sqrt scale
FEATURE_CLIP = 10.0


class SmallLOptState(NamedTuple):
    """State of :class:`SmallLOpt` (float32 except ``count``); trees mirror the parameters.

    Attributes:
      momentum: ``(M,) + param.shape`` (decay-major: each momentum a contiguous array).
      v_row: rank >= 2: ``param.shape[:-1]`` (row means of ``g^2``, averaged over time);
        rank < 2: ``param.shape``, the full second moment.
      v_col: rank >= 2: ``param.shape[:-2] + param.shape[-1:]``; rank < 2: ``(0,)`` (unused).
      grad_mean_sq: scalars, running mean square of the gradient (for clipping).
      count: int32 scalar, the number of updates taken.
    """

    momentum: optax.Updates
    v_row: optax.Updates
    v_col: optax.Updates
    grad_mean_sq: optax.Updates
    count: jax.Array


class SmallContext(NamedTuple):
    """Float32 per-parameter inputs of one tensor after the accumulators are updated."""

    grad: jax.Array  # S
    param_normalized: jax.Array  # S: p / rms(p)
    momentum: tuple[jax.Array, ...]  # M arrays of shape S, bias-corrected
    rsqrt_v: jax.Array  # S: 1 / sqrt(v_hat + eps)


Columns = list[jax.Array]  # feature columns, each of the tensor's shape S


def grad_feature(ctx: SmallContext) -> Columns:
    """``g / sqrt(v_hat)``: one column."""
    return [ctx.grad * ctx.rsqrt_v]


def momentum_feature(ctx: SmallContext) -> Columns:
    """``m_i / sqrt(v_hat)``: one column per momentum decay."""
    return [m * ctx.rsqrt_v for m in ctx.momentum]


def param_feature(ctx: SmallContext) -> Columns:
    """``p / rms(p)``: one column."""
    return [ctx.param_normalized]


SMALL_FEATURES: tuple[tuple[str, Callable[[SmallContext], Columns]], ...] = (
    ("grad", grad_feature),
    ("momentum", momentum_feature),
    ("param", param_feature),
)


def small_features(ctx: SmallContext) -> Columns:
    """All per-parameter inputs, clipped to ``±FEATURE_CLIP``: ``K`` columns of shape S."""
    return [jnp.clip(x, -FEATURE_CLIP, FEATURE_CLIP)
            for _, fn in SMALL_FEATURES for x in fn(ctx)]


def num_small_features(num_momenta: int) -> int:
    """``K``, derived from the feature functions (``2 + M``)."""
    vec = jax.ShapeDtypeStruct((2,), jnp.float32)
    ctx = SmallContext(vec, vec, (vec,) * num_momenta, vec)
    return len(jax.eval_shape(small_features, ctx))


def factored_second_moment(v_row: jax.Array, v_col: jax.Array) -> jax.Array:
    r"""Adafactor's reconstruction over the last two axes:
    :math:`\hat v_{\dots ij} = R_{\dots i} C_{\dots j} / \mathrm{mean}_i R_{\dots i}`."""
    norm = jnp.mean(v_row, axis=-1, keepdims=True)
    row = v_row / jnp.maximum(norm, 1e-30)
    return row[..., :, None] * v_col[..., None, :]


class ColumnsDense(nn.Module):
    r"""``nn.Dense`` (same ``kernel (K, H)`` and ``bias (H,)`` variables) on a list of ``K``
    same-shaped columns, returning ``H`` columns: :math:`y_o = b_o + \sum_j x_j W_{jo}`.

    For 2-8 wide layers this keeps the per-parameter network a set of elementwise ops on
    tensor-shaped arrays, which XLA fuses into one loop with the feature computation, instead
    of a ``(N, K)`` array (a minor-axis concatenate) and a matmul on 4-wide operands (measured
    2x faster for the whole update on CPU)."""

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, columns: Columns) -> Columns:
        kernel = self.param("kernel", self.kernel_init, (len(columns), self.features),
                            jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        outputs = []
        for o in range(self.features):
            y = columns[0] * kernel[0, o] + bias[o]
            for j in range(1, len(columns)):
                y = y + columns[j] * kernel[j, o]
            outputs.append(y)
        return outputs


class SmallMLP(nn.Module):
    """``K`` feature columns and ``(F_t,)`` tensor features → direction and magnitude."""

    hidden_sizes: tuple[int, ...] = (4,)
    output_init_scale: float = 1.0
    param_share: float = 0.5

    @nn.compact
    def __call__(self, columns: Columns, tensor_x: jax.Array) -> tuple[jax.Array, jax.Array]:
        split = functools.partial(nn.initializers.variance_scaling, mode="fan_in",
                                  distribution="truncated_normal")
        h = ColumnsDense(self.hidden_sizes[0], kernel_init=split(self.param_share),
                         name="param_in")(columns)
        bias = nn.Dense(self.hidden_sizes[0], use_bias=False,
                        kernel_init=split(1.0 - self.param_share), name="tensor_in")(tensor_x)
        h = [x + bias[o] for o, x in enumerate(h)]
        for i, width in enumerate(self.hidden_sizes[1:], start=1):
            h = ColumnsDense(width, name=f"dense_{i}")([nn.relu(x) for x in h])
        out = ColumnsDense(2, kernel_init=split(self.output_init_scale**2), name="out")(
            [nn.relu(x) for x in h])
        return out[0], out[1]


@dataclasses.dataclass(frozen=True)
class SmallLOpt:
    """A tiny per-parameter MLP with factored second moments; hashable (a static jit arg).

    Attributes:
      hidden_sizes: hidden widths of the per-parameter MLP (``(4,)``).
      momentum_decays: 1-3 momentum timescales.
      rms_decay: decay of the (factored) second moment.
      step_mult, exp_mult: :math:`\\lambda_1, \\lambda_2`.
      output_init_scale: initial scale of the MLP's output weights.
      clip_mult: gradients are clipped to ``clip_mult`` running RMS; ``0`` disables.

    Example::

      >>> lopt = SmallLOpt()
      >>> opt = lopt.transform(lopt.init(jax.random.key(0)), num_steps=100)
      >>> params = {"w": jnp.ones((3, 2))}
      >>> updates, state = opt.update(params, opt.init(params), params)
    """

    hidden_sizes: tuple[int, ...] = (4,)
    momentum_decays: tuple[float, ...] = (0.9, 0.99)
    rms_decay: float = 0.999
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    output_init_scale: float = 1.0
    clip_mult: float = 10.0

    def __post_init__(self):
        hidden = tuple(int(h) for h in self.hidden_sizes)
        decays = tuple(float(d) for d in self.momentum_decays)
        if not hidden or any(h <= 0 for h in hidden):
            raise LoptUserError(f"SmallLOpt: hidden_sizes={list(hidden)} must be positive ints")
        if not decays or any(not 0.0 <= d < 1.0 for d in decays) or not (
                0.0 <= self.rms_decay < 1.0):
            raise LoptUserError(f"SmallLOpt: momentum_decays={list(decays)} and rms_decay="
                                f"{self.rms_decay} must be numbers in [0, 1) (at least one "
                                "momentum decay)")
        object.__setattr__(self, "hidden_sizes", hidden)
        object.__setattr__(self, "momentum_decays", decays)

    @property
    def num_features(self) -> int:
        """Per-parameter MLP inputs ``K = 2 + M`` (derived)."""
        return num_small_features(len(self.momentum_decays))

    @property
    def flops_per_param(self) -> int:
        """Analytic FLOPs per parameter and step (see the module docstring)."""
        widths = (self.num_features, *self.hidden_sizes, 2)
        mlp = sum(2 * a * b + b for a, b in zip(widths[:-1], widths[1:])) + sum(
            self.hidden_sizes)  # multiply-adds, biases, ReLUs
        features = 3 + 3 + 3 + 3 * len(self.momentum_decays) + 3 * self.num_features
        return mlp + features + 5

    @property
    def network(self) -> SmallMLP:
        f_t = feats.num_tensor_features()
        return SmallMLP(self.hidden_sizes, self.output_init_scale,
                        self.num_features / (self.num_features + f_t))

    def init(self, key: jax.Array) -> MetaParams:
        """Meta-parameters: the MLP's flax variables ``{"params": {...}}``."""
        return self.network.init(key, [jnp.zeros((1,))] * self.num_features,
                                 jnp.zeros((feats.num_tensor_features(),)))

    def transform(
        self, theta: MetaParams, num_steps: int | jax.Array
    ) -> optax.GradientTransformationExtraArgs:
        """The optimizer of ``theta`` for a horizon of ``num_steps`` (may be traced)."""
        return optax.GradientTransformationExtraArgs(
            init=self.init_state, update=functools.partial(self.update, theta, num_steps))

    def init_state(self, params: optax.Params) -> SmallLOptState:
        """Zero momenta and second moments (factored for rank >= 2), ``count = 0``."""
        def zeros(shape):
            return jnp.zeros(shape, jnp.float32)

        def row(p):
            shape = jnp.shape(p)
            return zeros(shape[:-1] if len(shape) >= 2 else shape)

        def col(p):
            shape = jnp.shape(p)
            return zeros(shape[:-2] + shape[-1:] if len(shape) >= 2 else (0,))

        return SmallLOptState(
            momentum=jax.tree.map(lambda p: zeros((len(self.momentum_decays),) + jnp.shape(p)),
                                  params),
            v_row=jax.tree.map(row, params), v_col=jax.tree.map(col, params),
            grad_mean_sq=jax.tree.map(lambda _: zeros(()), params),
            count=jnp.zeros((), jnp.int32))

    def update(
        self,
        theta: MetaParams,
        num_steps: int | jax.Array,
        updates: optax.Updates,
        state: SmallLOptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, SmallLOptState]:
        """One step: gradients in, parameter deltas (param dtype) out; ``loss=`` and
        ``valid_loss=`` are accepted and ignored."""
        del extra_args
        if params is None:
            raise ValueError("SmallLOpt.update needs params (the parameter value is a feature)")
        leaves, treedef = jax.tree.flatten(updates)
        others = [treedef.flatten_up_to(t) for t in
                  (params, state.momentum, state.v_row, state.v_col, state.grad_mean_sq)]
        results = [self._update_tensor(theta, num_steps, state.count, *args)
                   for args in zip(leaves, *others)]
        steps, momentum, v_row, v_col, mean_sq = (treedef.unflatten(list(r))
                                                  for r in zip(*results))
        count = optax.safe_int32_increment(state.count)
        return steps, SmallLOptState(momentum, v_row, v_col, mean_sq, count)

    def _update_tensor(self, theta, num_steps, count, grad, param, momentum, v_row, v_col,
                       mean_sq):
        """Step and new state of one tensor, all maths in float32."""
        if jnp.size(param) == 0:
            return jnp.zeros_like(param), momentum, v_row, v_col, mean_sq
        g = jnp.asarray(grad, jnp.float32)
        p = jnp.asarray(param, jnp.float32)
        g, mean_sq = feats.clip_by_running_rms(g, mean_sq, count, self.clip_mult, CLIP_DECAY)
        t = count.astype(jnp.float32) + 1.0
        beta2 = self.rms_decay
        g2 = jnp.square(g)
        if g.ndim >= 2:
            v_row = beta2 * v_row + (1.0 - beta2) * jnp.mean(g2, axis=-1)
            v_col = beta2 * v_col + (1.0 - beta2) * jnp.mean(g2, axis=-2)
            v_hat = factored_second_moment(v_row, v_col)
        else:
            v_row = beta2 * v_row + (1.0 - beta2) * g2
            v_hat = v_row
        rsqrt_v = jax.lax.rsqrt(v_hat / (1.0 - beta2**t) + V_EPS)
        columns = [d * momentum[i] + (1.0 - d) * g for i, d in enumerate(self.momentum_decays)]
        corrected = tuple(m / (1.0 - d**t) for m, d in zip(columns, self.momentum_decays))
        p_scale = jax.lax.rsqrt(jnp.mean(jnp.square(p)) + feats.NORM_EPS)
        ctx = SmallContext(g, p * p_scale, corrected, rsqrt_v)
        momentum = jnp.stack(columns)
        tensor_x = feats.tensor_features(feats.TensorContext(count, num_steps, g, p))
        d, a = self.network.apply(theta, small_features(ctx), tensor_x)
        step = -self.step_mult * d * jnp.exp(self.exp_mult * a)
        return step.astype(jnp.result_type(param)), momentum, v_row, v_col, mean_sq
