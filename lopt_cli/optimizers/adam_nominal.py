r"""``adam_nominal``: Adam's step with a learned per-tensor magnitude and a small learned
correction (the "nominal term" design of STAR, Harrison et al. 2022, arXiv 2209.11208).

For a tensor with gradient :math:`g` and Adam's bias-corrected moments :math:`\hat m, \hat v`:

.. math::
    u = -e^{s_\theta(x_\text{tensor})} \Big(\frac{\hat m}{\sqrt{\hat v} + \epsilon}
        + \gamma\, c_\theta(x)\Big), \qquad
    x = \mathrm{clip}\Big(\frac{g}{\sqrt{\hat v}},\ \frac{\hat m}{\sqrt{\hat v}},\
        \frac{p}{\mathrm{rms}(p)}\Big)

with :math:`s` a linear map of the per-tensor features (layer ``scale``), :math:`c` a tiny
per-parameter MLP (``correction_in``, ``correction_out``; ``correction_hidden`` units) scaled
by :math:`\gamma` = ``correction_scale``, and the step :math:`\eta_t (u - \lambda p)` of
:mod:`~lopt_cli.optimizers.scheduled`. ``scale`` and ``correction_out`` start at zero and the
learned schedule starts constant, and gradient clipping is off by default (``clip_mult=0``), so
the untrained optimizer **is** ``optax.adam(learning_rate)`` (1e-3), up to float rounding.
Meta-training can only move it away from Adam as far as the meta-gradient asks.

``correction="multiplicative"`` applies the correction as a per-parameter factor instead,

.. math:: u = -e^{s_\theta(x_\text{tensor}) + \gamma\, c_\theta(x)}\,
    \frac{\hat m}{\sqrt{\hat v} + \epsilon},

so every step keeps Adam's sign and vanishes where Adam's does (:math:`\hat m = 0`): a learned
rule cannot hold a parameter away from a stationary point. The additive form can: where the
gradient has become small next to the second-moment memory :math:`\sqrt{\hat v}`, Adam's term
shrinks below :math:`\gamma c` and the iterate settles where the two cancel, short of the
minimum (a precision floor on long, deterministic problems such as Rosenbrock).

``beta2_fast`` (off by default) keeps a second, shorter second moment :math:`\hat v_f` (decay
``beta2_fast``, e.g. 0.99 beside ``beta2`` = 0.999) and learns per tensor how much of it to use:

.. math:: \hat v \leftarrow (1 - w)\, \hat v_s + w\, \hat v_f, \qquad
    w = \sigma\big(a_\theta(x_\text{tensor})\big),

with :math:`a` a linear map of the per-tensor features (layer ``second_moment_mix``, zero
weights: :math:`w = 1/2` untrained), so the effective :math:`\beta_2` may differ between tensors
and move with :math:`t/T`. The correction then also sees
:math:`\sqrt{\hat v_f / \hat v_s} - 1` (how much the gradient scale has changed lately).

``nesterov`` (off by default) uses Nesterov's momentum in the nominal term (NAdam, Dozat 2016,
as ``optax.nadam``): :math:`\hat m \leftarrow \beta_1 m_t / (1 - \beta_1^{t+1})
+ (1 - \beta_1) g_t / (1 - \beta_1^t)`, a look-ahead of one step of the momentum. Untrained
it is then exactly ``optax.nadam(learning_rate)``.

``cautious`` (off by default) keeps only the entries of Adam's term whose sign agrees with the
current gradient's, rescaled per tensor to keep its mean magnitude (Liang et al. 2024;
:mod:`~lopt_cli.optimizers.cautious`). Untrained it is then cautious Adam on the schedule.

``learned_decay`` (off by default) adds a per-tensor decoupled weight decay to the direction,
:math:`u \leftarrow u - \lambda_\theta p` with
:math:`\lambda_\theta = e^{c + r\tanh(a_\theta(x_\text{tensor}) / r)}` (layer
``weight_decay``, zero weights: :math:`\lambda = e^{-7} \approx 9\cdot10^{-4}` untrained, a
negligible shrink at rate 1e-3; bounded below 1), so meta-training on validation loss can
regularise, which a correction that keeps Adam's sign cannot.
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
from lopt_cli.optimizers import hierarchical_features as hfeats
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers import schedule as sched
from lopt_cli.optimizers import small_lopt as small
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.cautious import cautious_mask
from lopt_cli.optimizers.per_tensor import FieldRule, TensorInput
from lopt_cli.optimizers.scheduled import SCHEDULE_RULES, ScheduledLOpt, ScheduledNetwork

SCALE, CORRECTION_IN, CORRECTION_OUT = "scale", "correction_in", "correction_out"
MIX, DECAY = "second_moment_mix", "weight_decay"
# the learned decay λ = exp(c + r tanh(a / r)): e^-7 ≈ 9e-4 untrained, within (e^-14, 1)
LOG_DECAY_CENTRE, LOG_DECAY_RANGE = -7.0, 7.0
ADAM_EPS = 1e-8
CORRECTIONS = ("additive", "multiplicative")


class AdamNominalState(NamedTuple):
    """Adam's moments (the fast second moment: zeros of shape ``()`` when off) and the clipping
    RMS (trees mirroring the parameters), the schedule's loss statistics and the step count."""

    momentum: optax.Updates
    rms: optax.Updates
    rms_fast: optax.Updates
    grad_mean_sq: optax.Updates
    loss_stats: hfeats.LossStats
    count: jax.Array


class AdamNominalTensorState(NamedTuple):
    momentum: jax.Array
    rms: jax.Array
    rms_fast: jax.Array
    grad_mean_sq: jax.Array


def nominal_features(g: jax.Array, p: jax.Array, m_hat: jax.Array, v_hat: jax.Array,
                     fast_over_slow: jax.Array | None = None) -> small.Channels:
    r"""The correction's inputs :math:`x` (see the module docstring), clipped; with two second
    moments, also ``fast_over_slow`` :math:`= \sqrt{\hat v_f / \hat v_s} - 1`."""
    rsqrt_v = jax.lax.rsqrt(v_hat + small.V_EPS)
    p_scale = jax.lax.rsqrt(jnp.mean(jnp.square(p)) + feats.NORM_EPS)
    channels = [g * rsqrt_v, m_hat * rsqrt_v, p * p_scale]
    if fast_over_slow is not None:
        channels.append(fast_over_slow)
    return [jnp.clip(c, -small.FEATURE_CLIP, small.FEATURE_CLIP) for c in channels]


def _optional_decay(value: object) -> float | None:
    return None if value is None else per_tensor.DECAY.normalise(value)


def learned_decay(logit: jax.Array) -> jax.Array:
    r""":math:`\lambda_\theta = e^{c + r \tanh(a / r)}` (:data:`LOG_DECAY_CENTRE`,
    :data:`LOG_DECAY_RANGE`): about 9e-4 untrained, bounded in :math:`(e^{-14}, 1)`."""
    return jnp.exp(LOG_DECAY_CENTRE + LOG_DECAY_RANGE * jnp.tanh(logit / LOG_DECAY_RANGE))


class AdamNominalNetwork(ScheduledNetwork, nn.Module):
    """Per-tensor log-scale, per-parameter correction, optional per-tensor heads (linear maps
    of the tensor features, zero-initialised: :data:`MIX`, :data:`DECAY`) and the learned
    schedule."""

    correction_hidden: int = 4
    schedule_hidden: int = 16
    log_lr_bounds: tuple[float, float] = sched.LOG_LR_BOUNDS
    tensor_heads: tuple[str, ...] = ()

    def layer_names(self) -> tuple[str, ...]:
        schedule = (sched.SCHEDULE_IN, sched.SCHEDULE_OUT) if self.schedule_hidden else ()
        return (SCALE, CORRECTION_IN, CORRECTION_OUT) + self.tensor_heads + schedule

    @nn.compact
    def __call__(self, x: jax.Array, tensor_x: jax.Array, schedule_x: jax.Array):
        zeros = nn.initializers.zeros
        log_scale = nn.Dense(1, kernel_init=zeros, name=SCALE)(tensor_x)[0]
        h = nn.relu(nn.Dense(self.correction_hidden, name=CORRECTION_IN)(x))
        correction = nn.Dense(1, kernel_init=zeros, name=CORRECTION_OUT)(h)[..., 0]
        heads = {name: nn.Dense(1, kernel_init=zeros, name=name)(tensor_x)[0]
                 for name in self.tensor_heads}
        log_rate = (sched.schedule_layers(schedule_x, self.schedule_hidden, self.log_lr_bounds)
                    if self.schedule_hidden else jnp.zeros(()))
        return log_scale, correction, heads, log_rate

    def channels(self, channels: small.Channels, tensor_x: jax.Array):
        """``(s, c, heads)``: the log-scale, the correction on ``K`` channels of any shape and
        the per-tensor heads (:meth:`heads`)."""
        layers = fm.declared_layers(self.variables["params"], self.layer_names(),
                                    "AdamNominalNetwork")
        log_scale = tensor_x @ layers[SCALE]["kernel"][:, 0] + layers[SCALE]["bias"][0]
        h = [nn.relu(y) for y in small.channel_dense(layers[CORRECTION_IN], channels)]
        (correction,) = small.channel_dense(layers[CORRECTION_OUT], h)
        return log_scale, correction, self.heads(channels, tensor_x)

    def heads(self, channels: small.Channels, tensor_x: jax.Array) -> dict[str, jax.Array]:
        """``{name: a}``, each head's linear map of the tensor features (no per-parameter
        input: the mixing head is needed before the channels exist)."""
        del channels
        layers = fm.declared_layers(self.variables["params"], self.layer_names(),
                                    "AdamNominalNetwork")
        return {name: tensor_x @ layers[name]["kernel"][:, 0] + layers[name]["bias"][0]
                for name in self.tensor_heads}

    def input_width(self) -> int:
        return self.variables["params"][CORRECTION_IN]["kernel"].shape[0]


@dataclasses.dataclass(frozen=True)
class AdamNominalLOpt(ScheduledLOpt):
    """Adam with a learned magnitude and correction; hashable (a static jit arg).

    Attributes:
      beta1, beta2: Adam's decays.
      correction_hidden: hidden units of the per-parameter correction.
      correction_scale: :math:`\\gamma`.
      correction: ``"additive"`` (:math:`u \\propto \\text{adam} + \\gamma c`) or
        ``"multiplicative"`` (:math:`u \\propto e^{\\gamma c}\\,\\text{adam}`); see the module
        docstring.
      learning_rate, weight_decay, schedule, schedule_hidden (keyword-only): see
        :class:`~lopt_cli.optimizers.scheduled.ScheduledLOpt`.
      clip_mult: ``0`` (default: exactly Adam at initialisation) or the running-RMS clip.
      beta2_fast: ``None`` (default: one second moment) or the decay of a second, faster one,
        mixed with the ``beta2`` one per tensor by a learned weight (see the module docstring).
      learned_decay: add a learned per-tensor decoupled weight decay (module docstring), on
        top of the fixed ``weight_decay``.
      nesterov: Nesterov's momentum in the nominal term (NAdam; module docstring).
      cautious: mask the nominal term's entries whose sign differs from the gradient's
        (:func:`~lopt_cli.optimizers.cautious.cautious_mask`; module docstring).
    """

    beta1: float = 0.9
    beta2: float = 0.999
    correction_hidden: int = 4
    correction_scale: float = 0.1
    correction: str = "additive"
    clip_mult: float = 0.0
    beta2_fast: float | None = None
    learned_decay: bool = False
    nesterov: bool = False
    cautious: bool = False

    State = AdamNominalState
    TensorState = AdamNominalTensorState
    FIELD_RULES = {"beta1": per_tensor.DECAY, "beta2": per_tensor.DECAY,
                   "correction_hidden": per_tensor.POSITIVE_INT,
                   "correction": per_tensor.one_of(CORRECTIONS),
                   "beta2_fast": FieldRule(_optional_decay, "null or a number in [0, 1)"),
                   "learned_decay": per_tensor.BOOL, "nesterov": per_tensor.BOOL,
                   "cautious": per_tensor.BOOL,
                   **SCHEDULE_RULES}
    FLAT_TENSORS = False

    @property
    def network(self) -> AdamNominalNetwork:
        heads = ((MIX,) if self.beta2_fast is not None else ()) + (
            (DECAY,) if self.learned_decay else ())
        return AdamNominalNetwork(self.correction_hidden, self.schedule_width, self.log_lr_bounds,
                                  heads)

    @property
    def num_features(self) -> int:
        """``K = 3``, or 4 with a fast second moment (derived from :func:`nominal_features`)."""
        vec = jnp.zeros((2,))
        ratio = None if self.beta2_fast is None else vec
        return len(jax.eval_shape(nominal_features, vec, vec, vec, vec, ratio))

    def init_tensor_state(self, param: jax.Array) -> AdamNominalTensorState:
        zeros = per_tensor.float32_zeros(jnp.shape(param))
        scalar = per_tensor.float32_zeros(())
        return AdamNominalTensorState(zeros, zeros,
                                      scalar if self.beta2_fast is None else zeros, scalar)

    def second_moment(self, g: jax.Array, t: jax.Array, state: AdamNominalTensorState
                      ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """``(v_s, v_f, v̂_f)``: the new slow and fast second moments (``v_f`` is the state's
        placeholder when off) and the fast one bias-corrected (``None`` when off)."""
        v = self.beta2 * state.rms + (1.0 - self.beta2) * jnp.square(g)
        if self.beta2_fast is None:
            return v, state.rms_fast, None
        v_fast = self.beta2_fast * state.rms_fast + (1.0 - self.beta2_fast) * jnp.square(g)
        return v, v_fast, v_fast / (1.0 - self.beta2_fast**t)

    def first_moment(self, m: jax.Array, g: jax.Array, t: jax.Array) -> jax.Array:
        """The bias-corrected first moment: Adam's :math:`m_t / (1 - \\beta_1^t)`, or with
        ``nesterov`` NAdam's look-ahead (module docstring)."""
        if not self.nesterov:
            return m / (1.0 - self.beta1**t)
        return (self.beta1 * m / (1.0 - self.beta1 ** (t + 1.0))
                + (1.0 - self.beta1) * g / (1.0 - self.beta1**t))

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: AdamNominalTensorState
                    ) -> tuple[jax.Array, AdamNominalTensorState]:
        g, p = x.grad, x.param
        t = x.count.astype(jnp.float32) + 1.0
        m = self.beta1 * state.momentum + (1.0 - self.beta1) * g
        v, v_fast, v_fast_hat = self.second_moment(g, t, state)
        m_hat, v_hat = self.first_moment(m, g, t), v / (1.0 - self.beta2**t)
        tensor_x = feats.tensor_features(feats.TensorContext(x.count, x.num_steps, g, p))
        heads = self.network.apply(theta, [], tensor_x, method=AdamNominalNetwork.heads)
        fast_over_slow = None
        if v_fast_hat is not None:
            fast_over_slow = jnp.sqrt(v_fast_hat) * jax.lax.rsqrt(v_hat + small.V_EPS) - 1.0
            v_hat = v_hat + jax.nn.sigmoid(heads[MIX]) * (v_fast_hat - v_hat)
        channels = nominal_features(g, p, m_hat, v_hat, fast_over_slow)
        log_scale, correction, _ = self.network.apply(theta, channels, tensor_x,
                                                      method=AdamNominalNetwork.channels)
        adam = m_hat / (jnp.sqrt(v_hat) + ADAM_EPS)
        if self.cautious:
            adam = cautious_mask(adam, g)
        direction = self.learned_step(adam, log_scale, correction, heads, p)
        return direction, AdamNominalTensorState(m, v, v_fast, state.grad_mean_sq)

    def learned_step(self, nominal: jax.Array, log_scale: jax.Array, correction: jax.Array,
                     heads: jax.Array, p: jax.Array) -> jax.Array:
        r""":math:`-e^{s + \gamma c}\,\text{nominal}` (multiplicative) or
        :math:`-e^{s}(\text{nominal} + \gamma c)` (additive), less the learned decay
        :math:`\lambda_\theta p` when on."""
        gamma_c = self.correction_scale * correction
        if self.correction == "multiplicative":
            direction = -jnp.exp(log_scale + gamma_c) * nominal
        else:
            direction = -jnp.exp(log_scale) * (nominal + gamma_c)
        if self.learned_decay:
            direction = direction - learned_decay(heads[DECAY]) * p
        return direction
