r"""The hierarchical learned optimizer of Metz et al. 2020: a per-tensor LSTM feeding a
per-parameter MLP.

Every step, for the tensors :math:`W_1 \dots W_T` of the model:

1. **Accumulators** (as :class:`~lopt_cli.optimizers.mlp_lopt.MLPLOpt`): the gradient is
   clipped against its tensor's running RMS, then momentum :math:`m_\beta` and second moments
   :math:`v_\beta` are updated at every decay :math:`\beta`.
2. **Per-tensor LSTM** (flax ``nn.LSTMCell``, ``lstm_hidden`` units) runs once, as a batch of
   ``T`` rows: row :math:`t` holds the tensor statistics of :math:`W_t` and the shared loss
   features of :mod:`~lopt_cli.optimizers.hierarchical_features` (training-loss z-score,
   validation-loss generalisation gap, each with an "available" flag), the previous step's
   per-tensor mean of the MLP's extra outputs and the previous step's cross-tensor vector
   :math:`c = \mathrm{mean}_t\, W_c h_t` (the only channel between tensors). Its output
   :math:`h_t` gives a projection :math:`z_t = W_z h_t` (``lstm_to_mlp`` numbers), a per-tensor
   log step-size :math:`s_t = w_s^\top h_t` and the next cross-tensor vector.
3. **Per-parameter MLP** (``hidden_sizes``, ReLU) on the normalised per-parameter features of
   :mod:`~lopt_cli.optimizers.features`, with the per-tensor features and :math:`z_t` tiled per
   parameter (implemented as a per-tensor bias of the first layer: the same maths, a fraction
   of the cost). It outputs a direction :math:`d` and a magnitude :math:`a`, and
   ``num_extra_outputs`` extra channels whose mean over the tensor feeds the LSTM at the next
   step (the extra head is linear, so the tensor mean of its per-parameter outputs is the head
   of the tensor-mean hidden layer; it runs in the same product as the output layer). The
   step is

   .. math:: \Delta p = -\lambda_1\, d\, \exp\big(\lambda_2 (a + s_t)\big)

   with :math:`\lambda_1` = ``step_mult`` and :math:`\lambda_2` = ``exp_mult`` (1e-3 at init).

Cost per parameter and step (default config): about 3.9 kFLOPs, the MLP of MLPLOpt plus the
extra outputs, counted as the 32-wide reduction they need
(:attr:`HierarchicalLOpt.flops_per_param`; computing them in the output product spends
``2 H E`` instead, at no measurable extra time); the LSTM costs about ``8 H (F_l + H)`` FLOPs
*per tensor*. State: ``2 D`` floats per parameter (10)
plus ``2 H + E + 2 D + 1`` per tensor and ``C + 2 L + 1`` shared.
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
from lopt_cli.optimizers import fused_lstm
from lopt_cli.optimizers import hierarchical_features as hfeats
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.mlp_lopt import CLIP_DECAY


class HierarchicalLOptState(NamedTuple):
    """State of :class:`HierarchicalLOpt` (all float32 except ``count``).

    Attributes:
      momentum: tree like the parameters, ``(D,) + param.shape``.
      rms: tree like the parameters, ``(D,) + param.shape``.
      grad_mean_sq: tree like the parameters, scalars (running mean square of the gradient).
      moment_means: tree like the parameters, ``(2, D)``: tensor means of ``momentum`` and
        ``rms``, by the accumulators' own linear recursions fed with the means of ``g`` and
        ``g^2`` (the LSTM's tensor statistics need no extra pass over the accumulators).
      lstm_carry: ``(c, h)``, each ``(T, lstm_hidden)``: one LSTM row per tensor, in the
        order of ``jax.tree.leaves(params)``.
      extra_means: ``(T, E)``: per-tensor means of the MLP's extra outputs (after ``tanh``).
      cross_tensor: ``(C,)``: mean over tensors of the LSTM projection.
      loss_stats: exponentially weighted mean and variance of the training loss (``L``).
      count: int32 scalar, the number of updates taken.
    """

    momentum: optax.Updates
    rms: optax.Updates
    grad_mean_sq: optax.Updates
    moment_means: optax.Updates
    lstm_carry: tuple[jax.Array, jax.Array]
    extra_means: jax.Array
    cross_tensor: jax.Array
    loss_stats: hfeats.LossStats
    count: jax.Array


def _init(scale: float):
    """LeCun-normal-like (truncated) init with variance ``scale / fan_in``."""
    return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


class HierarchicalNetwork(nn.Module):
    """The per-tensor LSTM with its projections, and the per-parameter MLP (one flax module;
    ``init`` via ``__call__``, the two halves via ``method="per_tensor"`` and
    ``method="per_param"``)."""

    hidden_sizes: tuple[int, ...] = (32, 32)
    lstm_hidden: int = 64
    lstm_to_mlp: int = 16
    num_extra_outputs: int = 2
    cross_size: int = 8
    output_init_scale: float = 1.0
    param_share: float = 0.5  # F_p / (F_p + F_t + lstm_to_mlp), for the split first layer

    def setup(self):
        self.lstm = nn.LSTMCell(self.lstm_hidden)
        self.to_mlp = nn.Dense(self.lstm_to_mlp)
        self.to_step_scale = nn.Dense(1)
        self.to_cross = nn.Dense(self.cross_size)
        # First layer split over per-parameter / per-tensor inputs, initialised as one Dense.
        self.param_in = nn.Dense(self.hidden_sizes[0], kernel_init=_init(self.param_share))
        self.tensor_in = nn.Dense(self.hidden_sizes[0], use_bias=False,
                                  kernel_init=_init(1.0 - self.param_share))
        self.hidden = [nn.Dense(w) for w in self.hidden_sizes[1:]]
        self.out = nn.Dense(2, kernel_init=_init(self.output_init_scale**2))
        self.extra = nn.Dense(self.num_extra_outputs)

    def per_tensor(self, carry, lstm_inputs: jax.Array):
        """``(T, F_l)`` → carry, ``z (T, lstm_to_mlp)``, ``s (T,)``, cross vector ``(C,)``."""
        carry, h = self.lstm(carry, lstm_inputs)
        cross = jnp.mean(self.to_cross(h), axis=0)
        return carry, self.to_mlp(h), self.to_step_scale(h)[:, 0], cross

    def per_param(self, param_x: jax.Array, tensor_x: jax.Array):
        """``(N, F_p)``, ``(F_t + lstm_to_mlp,)`` → ``d, a (N,)``, last hidden ``(N, H)``.

        The reference definition; the optimizer evaluates the same function feature-major
        (:func:`apply_per_param_feature_major`)."""
        h = self.param_in(param_x) + self.tensor_in(tensor_x)
        for layer in self.hidden:
            h = layer(nn.relu(h))
        h = nn.relu(h)
        out = self.out(h)
        return out[..., 0], out[..., 1], h

    def extra_outputs(self, mean_hidden: jax.Array) -> jax.Array:
        """Per-tensor mean of the extra outputs, from the mean hidden layer, squashed."""
        return jnp.tanh(self.extra(mean_hidden))

    def __call__(self, carry, lstm_inputs, param_x, tensor_x):
        carry, z, s, cross = self.per_tensor(carry, lstm_inputs)
        d, a, h = self.per_param(param_x, jnp.concatenate([tensor_x, z[0]]))
        return d, a, self.extra_outputs(jnp.mean(h, axis=0)), cross, s


@dataclasses.dataclass(frozen=True)
class HierarchicalLOpt:
    """The per-tensor-LSTM + per-parameter-MLP learned optimizer; hashable (a static jit arg).

    Attributes:
      hidden_sizes: hidden widths of the per-parameter MLP.
      lstm_hidden: units of the per-tensor ``nn.LSTMCell``.
      lstm_to_mlp: width of the LSTM-output projection tiled into the MLP.
      num_extra_outputs: extra MLP outputs whose per-tensor mean feeds the LSTM.
      cross_size: width of the cross-tensor channel (mean over tensors of a projection).
      decays: timescales of the momentum and rms accumulators.
      loss_decays: timescales of the training-loss moving averages.
      step_mult, exp_mult: :math:`\\lambda_1, \\lambda_2`.
      output_init_scale: initial scale of the MLP's output weights.
      clip_mult: gradients are clipped to ``clip_mult`` running RMS; ``0`` disables.
      chunk_size: as :attr:`MLPLOpt.chunk_size` (parameters per MLP block; ``None``: auto).

    Example::

      >>> lopt = HierarchicalLOpt()
      >>> opt = lopt.transform(lopt.init(jax.random.key(0)), num_steps=100)
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
      >>> state = opt.init(params)
      >>> updates, state = opt.update(params, state, params, loss=1.0, valid_loss=1.2)
    """

    hidden_sizes: tuple[int, ...] = (32, 32)
    lstm_hidden: int = 64
    lstm_to_mlp: int = 16
    num_extra_outputs: int = 2
    cross_size: int = 8
    decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999)
    loss_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    output_init_scale: float = 1.0
    clip_mult: float = 10.0
    chunk_size: int | None = None

    def __post_init__(self):
        hidden = tuple(int(h) for h in self.hidden_sizes)
        for name in ("decays", "loss_decays"):
            values = tuple(float(d) for d in getattr(self, name))
            if not values or any(not 0.0 <= d < 1.0 for d in values):
                raise LoptUserError(f"HierarchicalLOpt: {name}={list(values)} must be a "
                                    "non-empty list of numbers in [0, 1)")
            object.__setattr__(self, name, values)
        sizes = {"lstm_hidden": self.lstm_hidden, "lstm_to_mlp": self.lstm_to_mlp,
                 "num_extra_outputs": self.num_extra_outputs, "cross_size": self.cross_size}
        if not hidden or any(h <= 0 for h in hidden) or any(
                int(v) != v or v <= 0 for v in sizes.values()):
            raise LoptUserError(f"HierarchicalLOpt: hidden_sizes={list(hidden)} and {sizes} "
                                "must be positive integers")
        object.__setattr__(self, "hidden_sizes", hidden)

    # ------------------------------------------------------------------ architecture

    @property
    def num_param_features(self) -> int:
        """``F_p``, per-parameter MLP inputs (23 by default)."""
        return feats.num_param_features(self.decays)

    @property
    def num_tensor_features(self) -> int:
        """Per-tensor MLP inputs: ``F_t`` of :mod:`features` plus ``lstm_to_mlp``."""
        return feats.num_tensor_features() + self.lstm_to_mlp

    @property
    def num_lstm_features(self) -> int:
        """``F_l``, the LSTM's input width, derived from the feature functions."""
        return hfeats.num_lstm_features(len(self.decays), len(self.loss_decays),
                                        self.num_extra_outputs, self.cross_size)

    @property
    def flops_per_param(self) -> int:
        """Analytic FLOPs per parameter: MLP matmuls, biases and ReLUs, the extra-output
        reduction, and the elementwise estimate of ``benchmarks.optimizer_overhead`` for the
        accumulators and features (``10 D + 3 F_p + 5``, step 6) plus 3 for the tracked means."""
        widths = (self.num_param_features, *self.hidden_sizes, 2)
        matmuls = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
        elementwise = 10 * len(self.decays) + 3 * self.num_param_features + 5 + 6 + 3
        return matmuls + 2 * sum(self.hidden_sizes) + self.hidden_sizes[-1] + elementwise

    @property
    def network(self) -> HierarchicalNetwork:
        f_p, f_t = self.num_param_features, self.num_tensor_features
        return HierarchicalNetwork(self.hidden_sizes, self.lstm_hidden, self.lstm_to_mlp,
                                   self.num_extra_outputs, self.cross_size,
                                   self.output_init_scale, f_p / (f_p + f_t))

    def init(self, key: jax.Array) -> MetaParams:
        """Meta-parameters: flax variables ``{"params": {"lstm": ..., "param_in": ..., ...}}``."""
        carry = self._zero_carry(1)
        return self.network.init(key, carry, jnp.zeros((1, self.num_lstm_features)),
                                 jnp.zeros((1, self.num_param_features)),
                                 jnp.zeros((feats.num_tensor_features(),)))

    def transform(
        self, theta: MetaParams, num_steps: int | jax.Array
    ) -> optax.GradientTransformationExtraArgs:
        """The optimizer of ``theta`` for a horizon of ``num_steps`` (may be traced)."""
        return optax.GradientTransformationExtraArgs(
            init=self.init_state, update=functools.partial(self.update, theta, num_steps))

    def _zero_carry(self, num_tensors: int) -> tuple[jax.Array, jax.Array]:
        return (jnp.zeros((num_tensors, self.lstm_hidden), jnp.float32),) * 2

    # ------------------------------------------------------------------ optimizer

    def init_state(self, params: optax.Params) -> HierarchicalLOptState:
        """Zero accumulators, zero LSTM carry, no loss seen, ``count = 0``."""
        num_tensors = len(jax.tree.leaves(params))

        def acc(p):
            return jnp.zeros((len(self.decays),) + jnp.shape(p), jnp.float32)

        return HierarchicalLOptState(
            momentum=jax.tree.map(acc, params),
            rms=jax.tree.map(acc, params),
            grad_mean_sq=jax.tree.map(lambda _: jnp.zeros((), jnp.float32), params),
            moment_means=jax.tree.map(lambda _: jnp.zeros((2, len(self.decays)), jnp.float32),
                                      params),
            lstm_carry=self._zero_carry(num_tensors),
            extra_means=jnp.zeros((num_tensors, self.num_extra_outputs), jnp.float32),
            cross_tensor=jnp.zeros((self.cross_size,), jnp.float32),
            loss_stats=hfeats.init_loss_stats(len(self.loss_decays)),
            count=jnp.zeros((), jnp.int32),
        )

    def update(
        self,
        theta: MetaParams,
        num_steps: int | jax.Array,
        updates: optax.Updates,
        state: HierarchicalLOptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, HierarchicalLOptState]:
        """One step: gradients in, parameter deltas (param dtype) out. Reads ``loss=`` and
        ``valid_loss=`` (either may be missing or NaN: its features are then zero and flagged
        unavailable)."""
        if params is None:
            raise ValueError("HierarchicalLOpt.update needs params (the value is a feature)")
        leaves, treedef = jax.tree.flatten(updates)
        count = optax.safe_int32_increment(state.count)
        if not leaves:
            return updates, state._replace(count=count)
        loss_x, loss_stats = hfeats.observe_losses(
            state.loss_stats, extra_args.get("loss"), extra_args.get("valid_loss"),
            self.loss_decays)
        others = [treedef.flatten_up_to(t) for t in
                  (params, state.momentum, state.rms, state.grad_mean_sq, state.moment_means)]
        columns = feats.param_feature_columns(self.decays)
        prepared = [self._prepare_tensor(num_steps, state, loss_x, columns, i, *args)
                    for i, args in enumerate(zip(leaves, *others))]
        lstm_x = jnp.stack([p["lstm_x"] for p in prepared])
        carry, z, log_scale, cross = fused_lstm.per_tensor(theta["params"], state.lstm_carry,
                                                           lstm_x)
        steps, extra_means = [], []
        for i, (param, prep) in enumerate(zip(treedef.flatten_up_to(params), prepared)):
            step, extra_mean = self._step_tensor(theta, param, prep, z[i], log_scale[i])
            steps.append(step)
            extra_means.append(extra_mean)
        extra_means = jnp.tanh(jnp.stack(extra_means))
        new_state = HierarchicalLOptState(
            momentum=treedef.unflatten([p["momentum"] for p in prepared]),
            rms=treedef.unflatten([p["rms"] for p in prepared]),
            grad_mean_sq=treedef.unflatten([p["mean_sq"] for p in prepared]),
            moment_means=treedef.unflatten([p["moment_means"] for p in prepared]),
            lstm_carry=carry, extra_means=extra_means, cross_tensor=cross,
            loss_stats=loss_stats, count=count)
        return treedef.unflatten(steps), new_state

    def _prepare_tensor(self, num_steps, state, loss_x, columns, index, grad, param, momentum,
                        rms, mean_sq, moment_means) -> dict:
        """Clipping, accumulators and every per-tensor quantity of one tensor (float32, on
        flattened ``(n,)`` and ``(D, n)`` views)."""
        n = jnp.size(grad)
        if n == 0:
            return {"lstm_x": jnp.zeros((self.num_lstm_features,)), "momentum": momentum,
                    "rms": rms, "mean_sq": mean_sq, "moment_means": moment_means}
        g = jnp.asarray(grad, jnp.float32).reshape(n)
        p = jnp.asarray(param, jnp.float32).reshape(n)
        g, mean_sq = feats.clip_by_running_rms(g, mean_sq, state.count, self.clip_mult,
                                               CLIP_DECAY)
        decays = jnp.asarray(self.decays, jnp.float32)
        m, v = feats.accumulate(momentum.reshape(-1, n), rms.reshape(-1, n), g, decays)
        # Tensor means of the accumulators by the same (linear) recursions; their second
        # moments are columns of the feature normalisers: no extra pass over the state.
        g_means = jnp.stack([jnp.mean(g), jnp.mean(jnp.square(g))])[:, None]
        moment_means = decays * moment_means + (1.0 - decays) * g_means
        ctx = feats.ParamContext(g, p, m, v)
        moments = feats.feature_moments(ctx)
        lstm_ctx = hfeats.LSTMContext(
            g, p, moment_means[0], moments[columns["momentum"]], moment_means[1],
            moments[columns["rms"]], state.count, num_steps, loss_x, state.extra_means[index],
            state.cross_tensor)
        return {
            "lstm_x": hfeats.lstm_features(lstm_ctx),
            "scales": jax.lax.rsqrt(moments + feats.NORM_EPS),  # = feats.feature_scales(ctx)
            "tensor_x": feats.tensor_features(feats.TensorContext(state.count, num_steps, g, p)),
            "ctx": ctx, "momentum": m.reshape(momentum.shape), "rms": v.reshape(rms.shape),
            "mean_sq": mean_sq,
            "moment_means": moment_means,
        }

    def _step_tensor(self, theta, param, prep, z, log_scale):
        """Step of one tensor and the tensor mean of the extra head's pre-activation ``(E,)``
        (the extra head of the mean hidden layer: the head is linear)."""
        if jnp.size(param) == 0:
            return jnp.zeros_like(param), theta["params"]["extra"]["bias"]
        tensor_x = jnp.concatenate([prep["tensor_x"], z])
        fn = functools.partial(self._step_columns, theta, prep["scales"], tensor_x, log_scale)
        step, extra_sum = cols.map_columns_with_sum(fn, prep["ctx"], self.resolved_chunk_size())
        step = step.reshape(jnp.shape(param)).astype(jnp.result_type(param))
        return step, extra_sum / jnp.size(param)

    def _step_columns(self, theta, scales, tensor_x, log_scale, block: feats.ParamContext):
        """Steps of a block of ``b`` parameters and their extra-head pre-activations
        ``(E, b)``."""
        d, a, extra = apply_per_param_feature_major(
            theta, feats.raw_param_features(block), scales, tensor_x)
        return -self.step_mult * d * jnp.exp(self.exp_mult * (a + log_scale)), extra

    def resolved_chunk_size(self) -> int:
        """Parameters per MLP block (see :meth:`MLPLOpt.resolved_chunk_size`)."""
        if self.chunk_size is not None:
            return int(self.chunk_size)
        return cols.CPU_CHUNK_COLUMNS if jax.default_backend() == "cpu" else 0


def apply_per_param_feature_major(
    theta: MetaParams, x: jax.Array, scales: jax.Array, tensor_x: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``HierarchicalNetwork.per_param`` on the raw feature-major block ``x`` ``(F_p, b)``
    normalised by ``scales``: ``d, a (b,)`` and the extra head (``extra``, before its ``tanh``)
    on every column's last hidden layer, ``(E, b)``. The output and extra heads run as one
    ``(2 + E, H) @ (H, b)`` product: on 2 CPU cores it takes the time of the 2-row output
    product alone, while summing the ``(H, b)`` hidden layer instead was a further pass over
    it. Equal to ``network.apply(theta, (x * scales[:, None]).T, tensor_x, method="per_param")``
    (with the extra head applied to its hidden layer) up to float rounding."""
    params = theta["params"]
    h = cols.input_layer(params, x, scales, tensor_x)
    hidden = nn.relu(cols.hidden_stack(cols.numbered_layers(params, "hidden_", 0), h))
    out = cols.dense(cols.concat_dense([params["out"], params["extra"]]), hidden)
    return out[0], out[1], out[2:]
