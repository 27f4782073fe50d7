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

The network is :class:`~lopt_cli.optimizers.hierarchical_network.HierarchicalNetwork`, whose
fast paths run here; the optimizer is a
:class:`~lopt_cli.optimizers.per_tensor.PerTensorLOpt` with a stage across tensors (the LSTM),
so it overrides ``step_tensors``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers import feature_major as fm
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers import hierarchical_features as hfeats
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.hierarchical_network import HierarchicalNetwork
from lopt_cli.optimizers.per_tensor import NetworkPath, TensorInput


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


class HierarchicalTensorState(NamedTuple):
    """One tensor's entries of :class:`HierarchicalLOptState`."""

    momentum: jax.Array
    rms: jax.Array
    grad_mean_sq: jax.Array
    moment_means: jax.Array


class PreparedTensor(NamedTuple):
    """One tensor after its accumulators, before the LSTM (float32, flattened views)."""

    lstm_x: jax.Array  # (F_l,) the tensor's LSTM row
    scales: jax.Array  # (F_p,) per-feature normalisers
    tensor_x: jax.Array  # (F_t,) per-tensor MLP features
    ctx: feats.ParamContext


@dataclasses.dataclass(frozen=True)
class HierarchicalLOpt(per_tensor.PerTensorLOpt):
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

    State = HierarchicalLOptState
    TensorState = HierarchicalTensorState
    FIELD_RULES = {
        "hidden_sizes": per_tensor.HIDDEN_SIZES, "decays": per_tensor.DECAYS,
        "loss_decays": per_tensor.DECAYS, "lstm_hidden": per_tensor.POSITIVE_INT,
        "lstm_to_mlp": per_tensor.POSITIVE_INT, "num_extra_outputs": per_tensor.POSITIVE_INT,
        "cross_size": per_tensor.POSITIVE_INT, "chunk_size": per_tensor.CHUNK_SIZE}

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

    def network_init_args(self) -> tuple:
        return (self._zero_carry(1), jnp.zeros((1, self.num_lstm_features)),
                jnp.zeros((1, self.num_param_features)),
                jnp.zeros((feats.num_tensor_features(),)))

    def network_paths(self, key: jax.Array) -> list[NetworkPath]:
        keys = jax.random.split(key, 6)
        carry = (jax.random.normal(keys[0], (5, self.lstm_hidden)),
                 jax.random.normal(keys[1], (5, self.lstm_hidden)))
        lstm_x = jax.random.normal(keys[2], (5, self.num_lstm_features))
        param_args = (jax.random.normal(keys[3], (self.num_param_features, 37)),
                      jnp.exp(jax.random.normal(keys[4], (self.num_param_features,))),
                      jax.random.normal(keys[5], (self.num_tensor_features,)))
        return [NetworkPath("per_tensor", HierarchicalNetwork.per_tensor_fused,
                            HierarchicalNetwork.per_tensor, (carry, lstm_x)),
                NetworkPath("per_param", HierarchicalNetwork.per_param_feature_major,
                            HierarchicalNetwork.per_param_reference, param_args)]

    def _zero_carry(self, num_tensors: int) -> tuple[jax.Array, jax.Array]:
        return (per_tensor.float32_zeros((num_tensors, self.lstm_hidden)),) * 2

    # ------------------------------------------------------------------ state

    def init_tensor_state(self, param: jax.Array) -> HierarchicalTensorState:
        """Zero accumulators, clipping RMS and tracked accumulator means."""
        shape = (len(self.decays),) + jnp.shape(param)
        zeros = per_tensor.float32_zeros
        return HierarchicalTensorState(zeros(shape), zeros(shape), zeros(()),
                                       zeros((2, len(self.decays))))

    def init_shared_state(self, num_tensors: int) -> dict[str, Any]:
        """Zero LSTM carry, extra outputs and cross-tensor vector; no loss seen."""
        return {"lstm_carry": self._zero_carry(num_tensors),
                "extra_means": per_tensor.float32_zeros((num_tensors, self.num_extra_outputs)),
                "cross_tensor": per_tensor.float32_zeros((self.cross_size,)),
                "loss_stats": hfeats.init_loss_stats(len(self.loss_decays))}

    # ------------------------------------------------------------------ update

    def step_tensors(
        self, theta: MetaParams, inputs: list[TensorInput | None], states: list,
        shared: dict[str, Any], extra_args: dict[str, Any],
    ) -> tuple[list[jax.Array | None], list, dict[str, Any]]:
        """Accumulators and LSTM rows of every tensor, the LSTM over all tensors, then every
        tensor's MLP step. Reads ``loss=`` and ``valid_loss=`` (either may be missing or NaN:
        its features are then zero and flagged unavailable)."""
        loss_x, loss_stats = hfeats.observe_losses(
            shared["loss_stats"], extra_args.get("loss"), extra_args.get("valid_loss"),
            self.loss_decays)
        rows = feats.param_feature_rows(self.decays)
        prepared = []
        for i, (x, state) in enumerate(zip(inputs, states)):
            if x is None:
                prepared.append(None)
            else:
                prep, states[i] = self._prepare_tensor(x, state, shared, loss_x, rows, i)
                prepared.append(prep)
        lstm_x = jnp.stack([jnp.zeros((self.num_lstm_features,)) if p is None else p.lstm_x
                            for p in prepared])
        network = self.network
        carry, z, log_scale, cross = network.apply(
            theta, shared["lstm_carry"], lstm_x, method=HierarchicalNetwork.per_tensor_fused)
        steps, extra_means = [], []
        for i, prep in enumerate(prepared):
            step, extra_mean = self._step_tensor(theta, network, prep, z[i], log_scale[i])
            steps.append(step)
            extra_means.append(extra_mean)
        shared = {"lstm_carry": carry, "extra_means": jnp.tanh(jnp.stack(extra_means)),
                  "cross_tensor": cross, "loss_stats": loss_stats}
        return steps, states, shared

    def _prepare_tensor(self, x: TensorInput, state: HierarchicalTensorState, shared: dict,
                        loss_x: hfeats.LossFeatures, rows: dict, index: int
                        ) -> tuple[PreparedTensor, HierarchicalTensorState]:
        """Accumulators and every per-tensor quantity of one tensor (flattened views)."""
        n = x.grad.shape[0]
        g, p = x.grad, x.param
        decays = jnp.asarray(self.decays, jnp.float32)
        m, v = feats.accumulate(state.momentum.reshape(-1, n), state.rms.reshape(-1, n), g,
                                decays)
        # Tensor means of the accumulators by the same (linear) recursions; their second
        # moments are rows of the feature normalisers: no extra pass over the state.
        g_means = jnp.stack([jnp.mean(g), jnp.mean(jnp.square(g))])[:, None]
        moment_means = decays * state.moment_means + (1.0 - decays) * g_means
        ctx = feats.ParamContext(g, p, m, v)
        moments = feats.feature_moments(ctx)
        lstm_ctx = hfeats.LSTMContext(
            g, p, moment_means[0], moments[rows["momentum"]], moment_means[1],
            moments[rows["rms"]], x.count, x.num_steps, loss_x, shared["extra_means"][index],
            shared["cross_tensor"])
        prepared = PreparedTensor(
            lstm_x=hfeats.lstm_features(lstm_ctx),
            scales=feats.scales_from_moments(moments),
            tensor_x=feats.tensor_features(feats.TensorContext(x.count, x.num_steps, g, p)),
            ctx=ctx)
        return prepared, HierarchicalTensorState(
            m.reshape(state.momentum.shape), v.reshape(state.rms.shape), state.grad_mean_sq,
            moment_means)

    def _step_tensor(self, theta, network: HierarchicalNetwork, prep: PreparedTensor | None,
                     z: jax.Array, log_scale: jax.Array):
        """Step of one tensor and the tensor mean of the extra head's pre-activation ``(E,)``
        (the extra head of the mean hidden layer: the head is linear). A tensor with no
        entries: no step, and the head of a zero hidden layer."""
        if prep is None:
            zero = jnp.zeros((self.hidden_sizes[-1],), jnp.float32)
            return None, network.apply(theta, zero,
                                       method=HierarchicalNetwork.extra_preactivation)
        tensor_x = jnp.concatenate([prep.tensor_x, z])

        def block_step(block: feats.ParamContext):
            d, a, extra = network.apply(theta, feats.raw_param_features(block), prep.scales,
                                        tensor_x,
                                        method=HierarchicalNetwork.per_param_feature_major)
            return per_tensor.exp_step(d, a + log_scale, self.step_mult, self.exp_mult), extra

        step, extra_sum = fm.map_blocks_with_sum(block_step, prep.ctx,
                                                 self.resolved_chunk_size())
        return step, extra_sum / prep.ctx.grad.shape[0]
