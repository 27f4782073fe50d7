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

The update runs the module's own fast path, :meth:`PerParameterMLP.feature_major`
(:mod:`lopt_cli.optimizers.feature_major`): the features of a tensor are ``(F_p, n)`` rows,
the normalisers are folded into the first kernel, and tensors of more than ``2 * chunk_size``
parameters run in blocks (:mod:`~lopt_cli.optimizers.cpu_tuning`). The tensor-wide
normalisers are computed first, in fused row reductions (``features.feature_scales``). The
optimizer itself is a :class:`~lopt_cli.optimizers.per_tensor.PerTensorLOpt`: this file is its
state, its module and its per-tensor step.

Cost per parameter and step, default config: about ``2 (23·32 + 32·32 + 32·2) ≈ 3.6`` kFLOPs in
the MLP, and ``2·5`` floats of state per parameter plus one per tensor (float32, whatever
the parameter dtype).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers import feature_major as fm
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.per_tensor import NetworkPath, TensorInput

PARAM_IN = "param_in"  # Dense on the per-parameter features
TENSOR_IN = "tensor_in"  # bias-free Dense on the per-tensor features


def dense_name(index: int) -> str:
    """Name of the MLP's ``index``-th layer after the first (``1 .. len(hidden_sizes)``)."""
    return f"dense_{index}"


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


class MLPTensorState(NamedTuple):
    """One tensor's entries of :class:`MLPLOptState`."""

    momentum: jax.Array
    rms: jax.Array
    grad_mean_sq: jax.Array


class PerParameterMLP(nn.Module):
    """Maps per-parameter features ``(N, F_p)`` and per-tensor features ``(F_t,)`` to a
    direction and a log-magnitude, each ``(N,)``.

    ``__call__`` is the plain definition (and creates the variables); the optimizer runs
    :meth:`feature_major`, the same function on the variables of the declared layers
    (:meth:`layer_names`), checked equal by the conformance suite.

    Attributes:
      hidden_sizes: widths of the hidden ReLU layers.
      output_init_scale: multiplies the standard deviation of the output layer's initial
        weights (1.0 = LeCun normal); smaller values make an untrained optimizer timider.
    """

    hidden_sizes: tuple[int, ...] = (32, 32)
    output_init_scale: float = 1.0

    def layer_names(self) -> tuple[str, ...]:
        """Every layer's name: the split first layer, then one per further layer."""
        return (PARAM_IN, TENSOR_IN,
                *(dense_name(i) for i in range(1, len(self.hidden_sizes) + 1)))

    def per_param_chain(self) -> tuple[str, ...]:
        """The layers of the per-parameter product chain, in order (without ``tensor_in``)."""
        return (PARAM_IN, *self.layer_names()[2:])

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

        h = nn.Dense(widths[0], kernel_init=split_init(f_p / (f_p + f_t)), name=PARAM_IN)(
            param_features)
        h = h + nn.Dense(widths[0], use_bias=False, kernel_init=split_init(f_t / (f_p + f_t)),
                         name=TENSOR_IN)(tensor_features)
        for i, width in enumerate(widths[1:], start=1):
            h = nn.Dense(width, kernel_init=inits[i], name=dense_name(i))(nn.relu(h))
        return h[..., 0], h[..., 1]

    def feature_major(
        self, x: jax.Array, scales: jax.Array, tensor_x: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """The network on the raw feature-major block ``x`` ``(F_p, b)`` normalised by
        ``scales`` ``(F_p,)``, with per-tensor features ``tensor_x``: ``(d, a)``, each
        ``(b,)``; the per-tensor features enter as a first-layer bias."""
        names = self.layer_names()
        params = fm.declared_layers(self.variables["params"], names, "PerParameterMLP")
        h = fm.split_input_layer(params[PARAM_IN], params[TENSOR_IN], x, scales, tensor_x)
        out = fm.hidden_stack([params[name] for name in names[2:]], h)
        return out[0], out[1]

    def reference(
        self, x: jax.Array, scales: jax.Array, tensor_x: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """:meth:`feature_major` by the plain definition: ``__call__`` on the normalised
        row-major features."""
        return self((x * scales[:, None]).T, tensor_x)


@dataclasses.dataclass(frozen=True)
class MLPLOpt(per_tensor.PerTensorLOpt):
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
        blocks of at most this many (:func:`~lopt_cli.optimizers.feature_major.map_blocks`);
        ``None`` picks ``cpu_tuning.CPU_CHUNK_SIZE`` on CPU and one block on accelerators;
        ``0``: always one block. Does not change the maths.

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

    State = MLPLOptState
    TensorState = MLPTensorState
    FIELD_RULES = {"hidden_sizes": per_tensor.HIDDEN_SIZES_MAY_BE_EMPTY,
                   "decays": per_tensor.DECAYS, "chunk_size": per_tensor.CHUNK_SIZE}

    # ------------------------------------------------------------------ architecture

    @property
    def network(self) -> PerParameterMLP:
        """The flax module applied to every parameter."""
        return PerParameterMLP(self.hidden_sizes, self.output_init_scale)

    @property
    def num_features(self) -> int:
        """MLP input width ``F = F_p + F_t``, derived from the feature functions (38 default)."""
        return feats.num_features(self.decays)

    def network_init_args(self) -> tuple:
        return (jnp.zeros((1, feats.num_param_features(self.decays))),
                jnp.zeros((feats.num_tensor_features(),)))

    def network_paths(self, key: jax.Array) -> list[NetworkPath]:
        f_p = feats.num_param_features(self.decays)
        keys = jax.random.split(key, 3)
        args = (jax.random.normal(keys[0], (f_p, 37)),
                jnp.exp(jax.random.normal(keys[1], (f_p,))),
                jax.random.normal(keys[2], (feats.num_tensor_features(),)))
        return [NetworkPath("per_param", PerParameterMLP.feature_major,
                            PerParameterMLP.reference, args)]

    # ------------------------------------------------------------------ optimizer

    def init_tensor_state(self, param: jax.Array) -> MLPTensorState:
        """Zero accumulators (decays on a leading axis) and clipping RMS."""
        shape = (len(self.decays),) + jnp.shape(param)
        return MLPTensorState(per_tensor.float32_zeros(shape), per_tensor.float32_zeros(shape),
                              per_tensor.float32_zeros(()))

    def step_tensor(
        self, theta: MetaParams, x: TensorInput, state: MLPTensorState
    ) -> tuple[jax.Array, MLPTensorState]:
        """Accumulators, features and ``-step_mult * d * exp(exp_mult * a)`` of one tensor
        (flattened ``(n,)`` and ``(D, n)`` views); ``loss=`` and ``valid_loss=`` are not read
        (this architecture has no per-tensor LSTM)."""
        n = x.grad.shape[0]
        m, v = feats.accumulate(state.momentum.reshape(-1, n), state.rms.reshape(-1, n),
                                x.grad, jnp.asarray(self.decays, jnp.float32))
        ctx = feats.ParamContext(x.grad, x.param, m, v)
        scales = feats.feature_scales(ctx)  # tensor-wide normalisers, (F_p,)
        tensor_x = feats.tensor_features(feats.TensorContext(x.count, x.num_steps, x.grad,
                                                             x.param))
        network = self.network

        def block_step(block: feats.ParamContext) -> jax.Array:
            d, a = network.apply(theta, feats.raw_param_features(block), scales, tensor_x,
                                 method=PerParameterMLP.feature_major)
            return per_tensor.exp_step(d, a, self.step_mult, self.exp_mult)

        step = fm.map_blocks(block_step, ctx, self.resolved_chunk_size())
        return step, MLPTensorState(m.reshape(state.momentum.shape),
                                    v.reshape(state.rms.shape), state.grad_mean_sq)
