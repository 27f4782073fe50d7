r"""``celo``: a Celo-class learned optimizer (Moudgil et al. 2025, arXiv 2501.12670).

A tiny per-parameter MLP (two hidden layers of 8 by default) on Adam/Adafactor-style features,
normalised per tensor, with a global learning rate that a small learned schedule scales (see
:mod:`~lopt_cli.optimizers.scheduled`). For a tensor with clipped gradient :math:`g`, momenta
:math:`m_i` (decays 0.9, 0.99, 0.999), second moment :math:`\hat v` (Adafactor-factored over the
last two axes for rank >= 2, see :mod:`~lopt_cli.optimizers.small_lopt`), all bias-corrected,
the :math:`K = 7` inputs, each clipped to ``±small_lopt.FEATURE_CLIP``, are

.. math::
    x = \Big(\frac{g}{\sqrt{\hat v}},\ \frac{m_i}{\sqrt{\hat v}},\
        \frac{g}{\mathrm{rms}(g)},\ \frac{p}{\mathrm{rms}(p)},\
        \sqrt{\frac{\hat v}{\mathrm{mean}(\hat v)}}\Big)

(``rms_inputs=False`` leaves out :math:`g/\mathrm{rms}(g)` and :math:`p/\mathrm{rms}(p)`,
:math:`K = 5`: on a tensor of one or a few entries they are signs of unit size that never
shrink, while the other inputs are relative to the gradient's own history. Measured on
``lopt_bench_small``: without them the quadratic and Rosenbrock end far higher; see the README.)

and the network gives a direction and a magnitude

.. math:: d = \mathrm{MLP}^{(d)}_\theta(x, x_\text{tensor}) + w^\top x, \qquad
          a = \mathrm{MLP}^{(a)}_\theta(x, x_\text{tensor}), \qquad
          u = d\, e^{\lambda_2 a}

where the linear ``skip`` :math:`w` starts on the 0.9-momentum feature (so the untrained
optimizer moves along Adam's direction) and the MLP's output layer starts small
(``output_init_scale``). The step of the tensor, before the rate :math:`\eta_t` and weight decay,
is normalised per tensor (``output``):

* ``"rms"`` (Celo2): :math:`-u / \mathrm{rms}(u)`: every tensor moves by :math:`\eta_t` in RMS;
* ``"param_scale"`` (Celo): :math:`-u \cdot \max(\mathrm{rms}(p), \rho)`: steps relative to
  the tensor's scale (:math:`\rho` = ``PARAM_RMS_FLOOR`` for tensors that start at zero);
* ``"adam_scale"``: :math:`-\frac{u}{\mathrm{rms}(u)}\,\mathrm{rms}\big(\hat m_{0.9}/\sqrt{\hat v}\big)`:
  the learned direction at the RMS of Adam's own step for the tensor. ``"rms"`` moves every
  tensor by :math:`\eta_t` in RMS whatever its gradients, so near a minimum only the schedule
  can shrink the step; Adam's step shrinks by itself there (the second moment remembers the
  larger gradients of before), and this mode inherits that. At initialisation (direction
  :math:`\approx \hat m_{0.9}/\sqrt{\hat v}`) it is Adam's step.

Like :class:`~lopt_cli.optimizers.small_lopt.SmallLOpt`, the network runs on tensor-shaped
channels, which XLA fuses into one elementwise loop. Cost (defaults): state 3 momenta and the
factored second moment, about 3 floats per parameter of a matrix; compute
:attr:`CeloLOpt.flops_per_param`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers import feature_major as fm
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers import hierarchical_features as hfeats
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers import schedule as sched
from lopt_cli.optimizers import small_lopt as small
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.per_tensor import TensorInput
from lopt_cli.optimizers.scheduled import SCHEDULE_RULES, ScheduledLOpt, ScheduledNetwork

SKIP = "skip"
OUTPUTS = ("rms", "param_scale", "adam_scale")
PARAM_RMS_FLOOR = 1e-3
STEP_EPS = 1e-12  # inside the RMS normaliser of the step
SKIP_FEATURE = 1  # m_0.9 / sqrt(v): the skip's initial input


class CeloState(NamedTuple):
    """State of :class:`CeloLOpt`: the fields of
    :class:`~lopt_cli.optimizers.small_lopt.SmallLOptState` (trees mirroring the parameters)
    and the running loss statistics of the schedule."""

    momentum: optax.Updates
    v_row: optax.Updates
    v_col: optax.Updates
    grad_mean_sq: optax.Updates
    loss_stats: hfeats.LossStats
    count: jax.Array


def celo_features(g: jax.Array, p: jax.Array, momenta: tuple[jax.Array, ...],
                  v_hat: jax.Array, rms_inputs: bool = True) -> small.Channels:
    """The ``K = 3 + M + 1`` input channels (see the module docstring; ``K = 1 + M + 1``
    without ``rms_inputs``), clipped."""
    rsqrt_v = jax.lax.rsqrt(v_hat + small.V_EPS)
    ratio = jnp.sqrt(v_hat * jax.lax.rsqrt(jnp.square(jnp.mean(v_hat)) + small.V_EPS))
    relative = []
    if rms_inputs:
        rms_g = jax.lax.rsqrt(jnp.mean(jnp.square(g)) + feats.NORM_EPS)
        rms_p = jax.lax.rsqrt(jnp.mean(jnp.square(p)) + feats.NORM_EPS)
        relative = [g * rms_g, p * rms_p]
    channels = [g * rsqrt_v, *(m * rsqrt_v for m in momenta), *relative, ratio]
    return [jnp.clip(x, -small.FEATURE_CLIP, small.FEATURE_CLIP) for x in channels]


def _one_hot_skip(index: int):
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.zeros(shape, dtype).at[index, 0].set(1.0)
    return init


class CeloNetwork(ScheduledNetwork, nn.Module):
    """``(N, K)`` features, ``(F_t,)`` tensor features and the schedule's inputs → ``(d, a)``
    and ``h`` (``__call__``: the plain definition, creating every layer); the optimizer runs
    :meth:`channels` and :meth:`log_rate`."""

    hidden_sizes: tuple[int, ...] = (8, 8)
    output_init_scale: float = 0.1
    param_share: float = 0.5
    schedule_hidden: int = 16
    log_lr_bounds: tuple[float, float] = sched.LOG_LR_BOUNDS

    def hidden_names(self) -> tuple[str, ...]:
        return tuple(small.dense_name(i) for i in range(1, len(self.hidden_sizes)))

    def rule_names(self) -> tuple[str, ...]:
        return (small.PARAM_IN, small.TENSOR_IN, *self.hidden_names(), small.OUT, SKIP)

    def layer_names(self) -> tuple[str, ...]:
        schedule = (sched.SCHEDULE_IN, sched.SCHEDULE_OUT) if self.schedule_hidden else ()
        return self.rule_names() + schedule

    @nn.compact
    def __call__(self, x: jax.Array, tensor_x: jax.Array, schedule_x: jax.Array):
        out = small.split_mlp_layers(x, tensor_x, self.hidden_sizes, self.output_init_scale,
                                     self.param_share)
        skip = nn.Dense(1, use_bias=False, kernel_init=_one_hot_skip(SKIP_FEATURE),
                        name=SKIP)(x)[..., 0]
        h = (sched.schedule_layers(schedule_x, self.schedule_hidden, self.log_lr_bounds)
             if self.schedule_hidden else jnp.zeros(()))
        return out[..., 0] + skip, out[..., 1], h

    def channels(self, channels: small.Channels, tensor_x: jax.Array):
        """``(d, a)`` on ``K`` channels of any common shape."""
        layers = fm.declared_layers(self.variables["params"], self.layer_names(), "CeloNetwork")
        d, a = small.split_mlp_channels(layers, channels, tensor_x, self.hidden_names())
        (skip,) = small.channel_dense({"kernel": layers[SKIP]["kernel"], "bias": jnp.zeros(1)},
                                      channels)
        return d + skip, a

    def input_width(self) -> int:
        return self.variables["params"][small.PARAM_IN]["kernel"].shape[0]


@dataclasses.dataclass(frozen=True)
class CeloLOpt(ScheduledLOpt):
    """Celo-class learned optimizer; hashable (a static jit arg).

    Attributes:
      hidden_sizes: hidden widths of the per-parameter MLP (``(8, 8)``).
      momentum_decays: the momenta's decays (``(0.9, 0.99, 0.999)``).
      rms_decay: decay of the (factored) second moment.
      exp_mult: :math:`\\lambda_2`.
      output: ``"rms"``, ``"param_scale"`` or ``"adam_scale"`` (see the module docstring).
      output_init_scale: initial scale of the MLP's output layer.
      learning_rate, weight_decay, schedule, schedule_hidden (keyword-only): see
        :class:`~lopt_cli.optimizers.scheduled.ScheduledLOpt`.
      clip_mult: gradients are clipped to ``clip_mult`` running RMS; ``0`` disables.
      rms_inputs: whether :math:`g/\\mathrm{rms}(g)` and :math:`p/\\mathrm{rms}(p)` are inputs.
    """

    hidden_sizes: tuple[int, ...] = (8, 8)
    momentum_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    rms_decay: float = 0.999
    exp_mult: float = 0.1
    output: str = "rms"
    output_init_scale: float = 0.1
    clip_mult: float = 10.0
    rms_inputs: bool = True

    State = CeloState
    TensorState = small.SmallTensorState
    FIELD_RULES = {"hidden_sizes": per_tensor.HIDDEN_SIZES,
                   "momentum_decays": per_tensor.DECAYS, "rms_decay": per_tensor.DECAY,
                   "output": per_tensor.one_of(OUTPUTS),
                   "rms_inputs": per_tensor.BOOL,
                   **SCHEDULE_RULES}
    FLAT_TENSORS = False

    @property
    def num_features(self) -> int:
        """``K = 3 + M + 1``, or ``1 + M + 1`` without ``rms_inputs`` (derived)."""
        vec = jnp.zeros((2,))
        features = functools.partial(celo_features, rms_inputs=self.rms_inputs)
        return len(jax.eval_shape(features, vec, vec, (vec,) * len(self.momentum_decays), vec))

    @property
    def flops_per_param(self) -> int:
        """Analytic FLOPs per parameter and step: the MLP with skip, features, accumulators
        (as :attr:`SmallLOpt.flops_per_param` counts them) and the normalised step."""
        k = self.num_features
        widths = (k, *self.hidden_sizes, 2)
        mlp = sum(2 * a * b + b for a, b in zip(widths[:-1], widths[1:])) + sum(
            self.hidden_sizes) + 2 * k
        accumulators = 9 + 3 * len(self.momentum_decays)
        return mlp + accumulators + 3 * k + 2 * k + 8

    @property
    def network(self) -> CeloNetwork:
        f_t = feats.num_tensor_features()
        return CeloNetwork(self.hidden_sizes, self.output_init_scale,
                           self.num_features / (self.num_features + f_t), self.schedule_width,
                           self.log_lr_bounds)

    def init_tensor_state(self, param: jax.Array) -> small.SmallTensorState:
        return small.init_factored_state(jnp.shape(param), len(self.momentum_decays))

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: small.SmallTensorState
                    ) -> tuple[jax.Array, small.SmallTensorState]:
        g, p = x.grad, x.param
        corrected, v_hat, state = small.update_accumulators(state, g, x.count,
                                                            self.momentum_decays, self.rms_decay)
        channels = celo_features(g, p, corrected, v_hat, self.rms_inputs)
        tensor_x = feats.tensor_features(feats.TensorContext(x.count, x.num_steps, g, p))
        d, a = self.network.apply(theta, channels, tensor_x, method=CeloNetwork.channels)
        u = d * jnp.exp(self.exp_mult * a)
        return -self._normalised(u, p, corrected[0] * jax.lax.rsqrt(v_hat + small.V_EPS)), state

    def _normalised(self, u: jax.Array, p: jax.Array, adam: jax.Array) -> jax.Array:
        """The tensor's step before the rate (``output``; ``adam``: Adam's direction)."""
        if self.output in ("rms", "adam_scale"):
            unit = u * jax.lax.rsqrt(jnp.mean(jnp.square(u)) + STEP_EPS)
            return unit if self.output == "rms" else unit * jnp.sqrt(jnp.mean(jnp.square(adam)))
        rms_p = jnp.sqrt(jnp.mean(jnp.square(p)))
        return u * jnp.maximum(rms_p, PARAM_RMS_FLOOR)

