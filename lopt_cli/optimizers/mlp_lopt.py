r"""The per-parameter MLP learned optimizer of Metz et al. 2020 (without the per-tensor LSTM).

For every parameter :math:`p` of every tensor, with the same weights :math:`\theta` everywhere,

.. math::

    \tilde g &= \mathrm{clip}(g, \pm c \sqrt{\hat s})
        \quad \text{(running per-tensor RMS of the gradient, see features.clip_by_running_rms)} \\
    m_\beta &\leftarrow \beta m_\beta + (1-\beta)\tilde g, \qquad
    v_\beta \leftarrow \beta v_\beta + (1-\beta)\tilde g^2
        \quad \text{for } \beta \in \text{decays} \\
    (d, a) &= \mathrm{MLP}_\theta\big(\mathrm{normalize}(x_\text{param}),\ x_\text{tensor}\big) \\
    \Delta p &= -\lambda_1 \, d \, \exp(\lambda_2 a)

with :math:`\lambda_1` = ``step_mult`` and :math:`\lambda_2` = ``exp_mult`` (both 1e-3, so an
untrained optimizer takes steps of about 1e-3 per parameter, in a direction that is *not* yet
a descent direction: meta-training makes it one). The inputs are listed in
:mod:`lopt_cli.optimizers.features`; their count is derived from the feature functions.

The MLP's first layer is split in two: a ``Dense`` on the per-parameter features (a matmul over
all the tensor's parameters) plus a bias-free ``Dense`` on the per-tensor features (computed once
per tensor). This is exactly a ``Dense`` on the tiled and concatenated ``(..., F)`` input, and is
initialised like one (LeCun normal with fan-in ``F``), but costs ``F_p`` rather than ``F``
multiply-adds per parameter and unit.

The update evaluates that network feature-major (:mod:`lopt_cli.optimizers.columns`): the
features of a tensor are ``(F_p, n)`` rows, the normalisers are folded into the first kernel,
and tensors of more than ``2 * CPU_CHUNK_COLUMNS`` parameters run in blocks on CPU. The
tensor-wide normalisers are computed first, in fused row reductions
(``features.feature_scales``).

Cost per parameter and step, default config: about ``2 (23·32 + 32·32 + 32·2) ≈ 3.6`` kFLOPs in
the MLP, and ``2·5`` floats of state per parameter plus one per tensor (float32, whatever
the parameter dtype).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import columns as cols
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers.base import MetaParams

CLIP_DECAY = 0.99  # decay of the per-tensor running mean square used for gradient clipping


class MLPLOptState(NamedTuple):
    """State of :class:`MLPLOpt`; every tree mirrors the parameters, all float32.

    Attributes:
      momentum: per tensor, ``(len(decays),) + param.shape``, one row per decay.
      rms: per tensor, ``(len(decays),) + param.shape``: second-moment accumulators.
      grad_mean_sq: per tensor, a scalar: running mean of the squared clipped gradient.
      count: int32 scalar, the number of updates taken.
    """

    momentum: optax.Updates
    rms: optax.Updates
    grad_mean_sq: optax.Updates
    count: jax.Array


class PerParameterMLP(nn.Module):
    """Maps per-parameter features ``(N, F_p)`` and per-tensor features ``(F_t,)`` to a
    direction and a log-magnitude, each ``(N,)``.

    This module defines the variables and their initialisation; the optimizer evaluates the
    same function feature-major (:func:`apply_feature_major`).

    Attributes:
      hidden_sizes: widths of the hidden ReLU layers.
      output_init_scale: multiplies the standard deviation of the output layer's initial
        weights (1.0 = LeCun normal); smaller values make an untrained optimizer timider.
    """

    hidden_sizes: tuple[int, ...] = (32, 32)
    output_init_scale: float = 1.0

    @nn.compact
    def __call__(
        self, param_features: jax.Array, tensor_features: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        widths = (*self.hidden_sizes, 2)
        inits = [nn.initializers.lecun_normal()] * len(widths)
        inits[-1] = nn.initializers.variance_scaling(
            self.output_init_scale**2, "fan_in", "truncated_normal")
        # Split first layer, initialised as one Dense of fan-in F = F_p + F_t.
        f_p, f_t = param_features.shape[-1], tensor_features.shape[-1]
        first_scale = self.output_init_scale**2 if len(widths) == 1 else 1.0

        def split_init(share: float):
            return nn.initializers.variance_scaling(first_scale * share, "fan_in",
                                                    "truncated_normal")

        h = nn.Dense(widths[0], kernel_init=split_init(f_p / (f_p + f_t)), name="param_in")(
            param_features)
        h = h + nn.Dense(widths[0], use_bias=False, kernel_init=split_init(f_t / (f_p + f_t)),
                         name="tensor_in")(tensor_features)
        for i, width in enumerate(widths[1:], start=1):
            h = nn.Dense(width, kernel_init=inits[i], name=f"dense_{i}")(nn.relu(h))
        return h[..., 0], h[..., 1]


@dataclasses.dataclass(frozen=True)
class MLPLOpt:
    """The per-parameter MLP learned optimizer; hashable, so it can be a static jit argument.

    Attributes:
      hidden_sizes: hidden widths of the per-parameter MLP.
      decays: timescales of the momentum and rms accumulators.
      step_mult: :math:`\\lambda_1`, scale of the step.
      exp_mult: :math:`\\lambda_2`, scale of the log-magnitude.
      output_init_scale: initial scale of the MLP's output weights (see
        :class:`PerParameterMLP`); with the defaults an untrained optimizer moves every
        parameter by about ``step_mult`` per step.
      clip_mult: gradients are clipped to ``clip_mult`` times their tensor's running RMS
        before entering the accumulators; ``0`` disables clipping.
      chunk_size: tensors of more than twice this many parameters run through the MLP in
        blocks of at most this many (:func:`~lopt_cli.optimizers.columns.map_columns`);
        ``None`` picks ``CPU_CHUNK_COLUMNS`` on CPU and one block on accelerators; ``0``:
        always one block. Does not change the maths.

    Example::

      >>> lopt = MLPLOpt()
      >>> theta = lopt.init(jax.random.key(0))
      >>> opt = lopt.transform(theta, num_steps=100)
      >>> params = {"w": jnp.ones((3, 2))}
      >>> state = opt.init(params)
      >>> updates, state = opt.update(params, state, params, loss=jnp.float32(1.0))
      >>> jax.tree.map(jnp.shape, updates)
      {'w': (3, 2)}
    """

    hidden_sizes: tuple[int, ...] = (32, 32)
    decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999)
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    output_init_scale: float = 1.0
    clip_mult: float = 10.0
    chunk_size: int | None = None

    def __post_init__(self):
        hidden = tuple(int(h) for h in self.hidden_sizes)
        decays = tuple(float(d) for d in self.decays)
        if any(h <= 0 for h in hidden):
            raise LoptUserError(f"MLPLOpt: hidden_sizes={list(hidden)} must be positive ints")
        if not decays or any(not 0.0 <= d < 1.0 for d in decays):
            raise LoptUserError(f"MLPLOpt: decays={list(decays)} must be a non-empty list "
                                "of numbers in [0, 1)")
        object.__setattr__(self, "hidden_sizes", hidden)
        object.__setattr__(self, "decays", decays)

    # ------------------------------------------------------------------ architecture

    @property
    def network(self) -> PerParameterMLP:
        """The flax module applied to every parameter."""
        return PerParameterMLP(self.hidden_sizes, self.output_init_scale)

    @property
    def num_features(self) -> int:
        """MLP input width ``F = F_p + F_t``, derived from the feature functions (38 default)."""
        return feats.num_features(self.decays)

    def init(self, key: jax.Array) -> MetaParams:
        """Meta-parameters: the MLP's flax variables ``{"params": {...}}``."""
        f_p = feats.num_param_features(self.decays)
        f_t = feats.num_tensor_features()
        return self.network.init(key, jnp.zeros((1, f_p)), jnp.zeros((f_t,)))

    def transform(
        self, theta: MetaParams, num_steps: int | jax.Array
    ) -> optax.GradientTransformationExtraArgs:
        """The optimizer of ``theta`` for a horizon of ``num_steps`` (may be traced)."""
        return optax.GradientTransformationExtraArgs(
            init=self.init_state, update=functools.partial(self.update, theta, num_steps))

    # ------------------------------------------------------------------ optimizer

    def init_state(self, params: optax.Params) -> MLPLOptState:
        """Zero accumulators (float32, decays on a leading axis) and ``count = 0``."""
        def acc(p):
            return jnp.zeros((len(self.decays),) + jnp.shape(p), jnp.float32)

        return MLPLOptState(
            momentum=jax.tree.map(acc, params),
            rms=jax.tree.map(acc, params),
            grad_mean_sq=jax.tree.map(lambda _: jnp.zeros((), jnp.float32), params),
            count=jnp.zeros((), jnp.int32),
        )

    def update(
        self,
        theta: MetaParams,
        num_steps: int | jax.Array,
        updates: optax.Updates,
        state: MLPLOptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, MLPLOptState]:
        """One step: ``updates`` are gradients in, parameter deltas (param dtype) out.

        ``loss=`` and ``valid_loss=`` are accepted and ignored (this architecture has no
        per-tensor LSTM to read them).
        """
        del extra_args
        if params is None:
            raise ValueError("MLPLOpt.update needs params (the parameter value is a feature)")
        leaves, treedef = jax.tree.flatten(updates)
        others = [treedef.flatten_up_to(t) for t in
                  (params, state.momentum, state.rms, state.grad_mean_sq)]
        results = [self._update_tensor(theta, num_steps, state.count, *args)
                   for args in zip(leaves, *others)]
        steps, momentum, rms, mean_sq = (treedef.unflatten(list(r)) for r in zip(*results))
        count = optax.safe_int32_increment(state.count)
        return steps, MLPLOptState(momentum, rms, mean_sq, count)

    def _update_tensor(self, theta, num_steps, count, grad, param, momentum, rms, mean_sq):
        """Step and new state of one tensor; all maths in float32 on flattened ``(n,)`` and
        ``(D, n)`` views."""
        if jnp.size(param) == 0:
            return jnp.zeros_like(param), momentum, rms, mean_sq
        n = jnp.size(param)
        g = jnp.asarray(grad, jnp.float32).reshape(n)
        p = jnp.asarray(param, jnp.float32).reshape(n)
        g, mean_sq = feats.clip_by_running_rms(g, mean_sq, count, self.clip_mult, CLIP_DECAY)
        m, v = feats.accumulate(momentum.reshape(-1, n), rms.reshape(-1, n), g,
                                jnp.asarray(self.decays, jnp.float32))
        ctx = feats.ParamContext(g, p, m, v)
        scales = feats.feature_scales(ctx)  # tensor-wide normalisers, (F_p,)
        tensor_x = feats.tensor_features(feats.TensorContext(count, num_steps, g, p))
        step_columns = functools.partial(self._step_columns, theta, scales, tensor_x)
        step = cols.map_columns(step_columns, ctx, self.resolved_chunk_size())
        return (step.reshape(jnp.shape(param)).astype(jnp.result_type(param)),
                m.reshape(momentum.shape), v.reshape(rms.shape), mean_sq)

    def _step_columns(self, theta, scales, tensor_x, block: feats.ParamContext) -> jax.Array:
        """``-step_mult * d * exp(exp_mult * a)`` for a block of ``b`` parameters."""
        direction, magnitude = apply_feature_major(
            theta, feats.raw_param_features(block), scales, tensor_x)
        return -self.step_mult * direction * jnp.exp(self.exp_mult * magnitude)

    def resolved_chunk_size(self) -> int:
        """Parameters per MLP block: ``chunk_size``, or when None ``CPU_CHUNK_COLUMNS`` on CPU
        and no chunking on accelerators."""
        if self.chunk_size is not None:
            return int(self.chunk_size)
        return cols.CPU_CHUNK_COLUMNS if jax.default_backend() == "cpu" else 0


def apply_feature_major(
    theta: MetaParams, x: jax.Array, scales: jax.Array, tensor_x: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:class:`PerParameterMLP` (variables ``theta``) on the raw feature-major block ``x``
    ``(F_p, b)`` normalised by ``scales`` ``(F_p,)``, with per-tensor features ``tensor_x``:
    ``(d, a)``, each ``(b,)``. Equal to ``network.apply(theta, (x * scales[:, None]).T,
    tensor_x)`` up to float rounding; the per-tensor features enter as a first-layer bias."""
    params = theta["params"]
    h = cols.input_layer(params, x, scales, tensor_x)
    out = cols.hidden_stack(cols.numbered_layers(params, "dense_", 1), h)
    return out[0], out[1]
