r"""Learning-rate schedules of the learned optimizers that take a base learning rate.

An architecture with a base learning rate :math:`\eta` (``celo``, ``adam_nominal``) scales its
step by :math:`\eta_t = \eta\, s(r)\, e^{h_t}` with :math:`r = (t + 1) / T` the fraction of
the horizon done after the update (``t`` updates taken before it, :func:`progress`):

* ``schedule="learned"``: :math:`s = 1` and :math:`h_t = b(\mathrm{MLP}_\theta(x_t))`,
  a small global network (layers ``schedule_in``, ``schedule_out``) bounded softly by
  :func:`bounded_log_rate` to :math:`(-B_-, B_+)` (``log_lr_bounds``, default
  :data:`LOG_LR_BOUNDS`) on the training and validation losses relative to their running
  statistics (:func:`~lopt_cli.optimizers.hierarchical_features.observe_losses`) and a
  multi-timescale embedding of :math:`r` (:func:`progress_embedding`). Its output layer starts
  at zero, so :math:`h_0 = 0`: the schedule starts constant at :math:`\eta`.
* ``"constant"`` (:math:`s = 1`), ``"cosine"`` (:math:`s = \tfrac12 (1 + \cos \pi r)`),
  ``"warmup_cosine"`` (linear warm-up over the first 5 %, then cosine) and
  ``"warmup_stable_decay"`` (the same warm-up, constant, then linear to zero over the last
  20 %: :math:`s = \min(r / 0.05,\, 1,\, (1 - r) / 0.2)`) and ``"warmup_stable_sqrt_decay"``
  (the same with the "1 − sqrt" cool-down of Hägele et al. 2024, :math:`s = 1 - \sqrt{u}`,
  :math:`u = \mathrm{clip}((r - 0.8) / 0.2, 0, 1)`: half the rate after a quarter of the
  decay, not half of it), with :math:`h = 0`: supplied schedules, no learned layers. Over a
  horizon the cosine's steps add up to about half of the constant's and the stable-decay's to
  about 0.88 (the sqrt one's to 0.84), while all end at zero.
* a supplied schedule with ``schedule_modulation``: both, :math:`\eta_t = \eta\, s(r)\,
  e^{h_t}` with the learned :math:`h_t` above on top of the supplied :math:`s(r)` (zero
  untrained), so the shape is given and meta-training learns only how the losses bend it (for
  example, to anneal early when the validation loss turns).

Two-phase meta-training (``train_only=rule|schedule``) tells the schedule's meta-parameters from
the update rule's by the ``schedule`` prefix of their layer names (:data:`LAYER_PREFIX`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt_cli.optimizers import hierarchical_features as hfeats

LAYER_PREFIX = "schedule"
SCHEDULE_IN, SCHEDULE_OUT = "schedule_in", "schedule_out"
SCHEDULES = ("learned", "constant", "cosine", "warmup_cosine", "warmup_stable_decay",
             "warmup_stable_sqrt_decay")
LOSS_DECAYS = (0.9, 0.99, 0.999)
FREQUENCIES = (1.0, 2.0, 4.0, 8.0)  # of the t/T embedding, in half-periods over the horizon
LOG_LR_BOUNDS = (-3.0, 3.0)  # h in (-3, 3): the learned schedule moves the rate by < e^3 either way
WARMUP_FRACTION = 0.05
DECAY_FRACTION = 0.2  # warmup_stable_decay: the last 20% of the horizon decays linearly to zero


def progress(count: jax.Array, num_steps: jax.Array | int) -> jax.Array:
    """:math:`r = \\mathrm{clip}((t + 1) / T, 0, 1)` for the update taken after ``count`` ones."""
    horizon = jnp.maximum(jnp.asarray(num_steps, jnp.float32), 1.0)
    return jnp.clip((count.astype(jnp.float32) + 1.0) / horizon, 0.0, 1.0)


def progress_embedding(r: jax.Array, num_steps: jax.Array | int) -> jax.Array:
    r"""``(r, sin(k π r), cos(k π r) for k in FREQUENCIES, 0.1 log T)``: ``(2 + 2K,)``."""
    phases = jnp.pi * r * jnp.asarray(FREQUENCIES, jnp.float32)
    log_horizon = 0.1 * jnp.log(jnp.maximum(jnp.asarray(num_steps, jnp.float32), 1.0))
    return jnp.concatenate([r[None], jnp.sin(phases), jnp.cos(phases), log_horizon[None]])


def schedule_features(loss_x: hfeats.LossFeatures, r: jax.Array,
                      num_steps: jax.Array | int) -> jax.Array:
    """Inputs of the learned schedule: loss features and the progress embedding."""
    return jnp.concatenate([loss_x.train_z, loss_x.train_available[None], loss_x.valid_z,
                            loss_x.valid_gap, loss_x.valid_available[None],
                            progress_embedding(r, num_steps)])


def num_schedule_features() -> int:
    """Width of :func:`schedule_features` (derived)."""
    num = len(LOSS_DECAYS)
    loss_x = hfeats.LossFeatures(jnp.zeros(num), jnp.zeros(()), jnp.zeros(num), jnp.zeros(num),
                                 jnp.zeros(()))
    return int(jax.eval_shape(schedule_features, loss_x, jnp.zeros(()), 1).shape[0])


def supplied_factor(name: str, r: jax.Array) -> jax.Array:
    """:math:`s(r)` of a supplied schedule."""
    if name in ("learned", "constant"):
        return jnp.ones_like(r)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * r))
    if name == "cosine":
        return cosine
    warm = jnp.minimum(r / WARMUP_FRACTION, 1.0)
    remaining = jnp.clip((1.0 - r) / DECAY_FRACTION, 0.0, 1.0)  # 1 until the decay, then → 0
    if name == "warmup_stable_decay":
        return jnp.minimum(warm, remaining)
    if name == "warmup_stable_sqrt_decay":
        return jnp.minimum(warm, 1.0 - jnp.sqrt(1.0 - remaining))
    after = jnp.clip((r - WARMUP_FRACTION) / (1.0 - WARMUP_FRACTION), 0.0, 1.0)
    return warm * 0.5 * (1.0 + jnp.cos(jnp.pi * after))


def bounded_log_rate(out: jax.Array, bounds: tuple[float, float] = LOG_LR_BOUNDS) -> jax.Array:
    r""":math:`h = B_\pm \tanh(o / B_\pm)` with :math:`B_+` for :math:`o \ge 0` and
    :math:`B_-` below: slope 1 at 0 on both sides, :math:`h \in (-B_-, B_+)`
    (``bounds = (-B_-, B_+)``). Equal bounds give the symmetric :math:`B \tanh(o / B)`."""
    low, high = bounds
    scale = jnp.where(out >= 0, high, -low)
    return scale * jnp.tanh(out / scale)


def check_log_lr_bounds(value: Any) -> tuple[float, float]:
    """``(low, high)`` as floats with ``-inf < low < 0 < high < inf``, else ``ValueError``."""
    low, high = (float(v) for v in value)
    if not (-float("inf") < low < 0.0 < high < float("inf")):
        raise ValueError(value)
    return low, high


def schedule_layers(x: jax.Array, hidden: int,
                    bounds: tuple[float, float] = LOG_LR_BOUNDS) -> jax.Array:
    """The learned schedule's layers, created inside a compact module: ``h`` (scalar)."""
    h = nn.relu(nn.Dense(hidden, name=SCHEDULE_IN)(x))
    out = nn.Dense(1, kernel_init=nn.initializers.zeros, name=SCHEDULE_OUT)(h)[0]
    return bounded_log_rate(out, bounds)


def apply_schedule_layers(params: Any, x: jax.Array,
                          bounds: tuple[float, float] = LOG_LR_BOUNDS) -> jax.Array:
    """:func:`schedule_layers` on a module's ``variables["params"]`` (the same maths)."""
    layer_in, layer_out = params[SCHEDULE_IN], params[SCHEDULE_OUT]
    h = nn.relu(x @ layer_in["kernel"] + layer_in["bias"])
    out = h @ layer_out["kernel"][:, 0] + layer_out["bias"][0]
    return bounded_log_rate(out, bounds)


def init_schedule_state() -> hfeats.LossStats:
    """No loss seen yet (the shared ``loss_stats`` field)."""
    return hfeats.init_loss_stats(len(LOSS_DECAYS))


def check_schedule(name: Any) -> str:
    """``name`` if it is a known schedule, else ``ValueError``."""
    if name not in SCHEDULES:
        raise ValueError(name)
    return str(name)
