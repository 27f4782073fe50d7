r"""Per-tensor learned optimizers with a base learning rate, a schedule and weight decay.

:class:`ScheduledLOpt` is a :class:`~lopt_cli.optimizers.per_tensor.PerTensorLOpt` whose step
of a tensor :math:`p` is

.. math:: \Delta p = \eta_t\, (u_\theta(p) - \lambda\, p), \qquad
          \eta_t = \eta\, s(t/T)\, e^{h_t}

with :math:`u` the architecture's update direction (:meth:`ScheduledLOpt.step_tensor`, which
already carries the minus sign of descent), :math:`\lambda` the decoupled weight decay
(``weight_decay``) and :math:`\eta_t` the global rate of :mod:`~lopt_cli.optimizers.schedule`
(``learning_rate``, ``schedule``, ``schedule_hidden``, ``schedule_modulation``). The rate is
computed once per update
from the losses passed as ``update(..., loss=, valid_loss=)``; the running loss statistics are
the shared state field ``loss_stats``.

The flax module of a subclass declares ``schedule_hidden`` and, when it is positive, creates the
schedule's layers with :func:`~lopt_cli.optimizers.schedule.schedule_layers` and exposes
``log_rate(x)`` (:func:`~lopt_cli.optimizers.schedule.apply_schedule_layers`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lopt_cli.errors import LoptUserError
from lopt_cli.optimizers import feature_major as fm
from lopt_cli.optimizers import features as feats
from lopt_cli.optimizers import hierarchical_features as hfeats
from lopt_cli.optimizers import per_tensor
from lopt_cli.optimizers import schedule as sched
from lopt_cli.optimizers.base import MetaParams
from lopt_cli.optimizers.per_tensor import FieldRule, NetworkPath, TensorInput

SCHEDULE_RULES: dict[str, FieldRule] = {
    "learning_rate": per_tensor.POSITIVE_FINITE,
    "weight_decay": per_tensor.NON_NEGATIVE_FINITE,
    "schedule": FieldRule(sched.check_schedule, "one of " + ", ".join(sched.SCHEDULES)),
    "schedule_hidden": FieldRule(per_tensor.NON_NEGATIVE_INT.normalise,
                                 "a positive int (or 0 with a supplied schedule)"),
    "schedule_modulation": per_tensor.BOOL,
    "log_lr_bounds": FieldRule(sched.check_log_lr_bounds,
                               "[low, high], finite, with low < 0 < high"),
}


class ScheduledNetwork:
    """Methods shared by the flax modules of :class:`ScheduledLOpt` (a mixin): the module's
    ``__call__(x, tensor_x, schedule_x)`` returns the rule's outputs and then ``h`` (bounded
    to its field ``log_lr_bounds``), and ``input_width()`` says how many per-parameter inputs
    ``x`` has."""

    def input_width(self) -> int:
        raise NotImplementedError

    def stacked(self, channels: list[jax.Array], tensor_x: jax.Array) -> tuple:
        """The rule's fast ``channels`` method by the plain definition (stacked channels)."""
        *rule, _ = self(jnp.stack(channels, axis=-1), tensor_x,
                        jnp.zeros((sched.num_schedule_features(),)))
        return tuple(rule)

    def log_rate(self, schedule_x: jax.Array) -> jax.Array:
        """``h``: the learned schedule on the module's declared variables."""
        layers = fm.declared_layers(self.variables["params"], self.layer_names(),
                                    type(self).__name__)
        return sched.apply_schedule_layers(layers, schedule_x, self.log_lr_bounds)

    def log_rate_reference(self, schedule_x: jax.Array) -> jax.Array:
        """:meth:`log_rate` by the plain definition."""
        return self(jnp.zeros((1, self.input_width())),
                    jnp.zeros((feats.num_tensor_features(),)), schedule_x)[-1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduledLOpt(per_tensor.PerTensorLOpt):
    r"""Base of the learned optimizers with a base learning rate (see the module docstring).
    Subclasses are frozen dataclasses that inherit its keyword-only fields and rules
    (:data:`SCHEDULE_RULES`) and implement :meth:`step_tensor` (the direction).

    Attributes:
      learning_rate: the base rate :math:`\eta`.
      weight_decay: the decoupled decay :math:`\lambda`.
      schedule: ``learned`` or a supplied one (:data:`~lopt_cli.optimizers.schedule.SCHEDULES`).
      schedule_hidden: hidden units of the learned schedule (unused by a supplied one unless
        it is modulated).
      schedule_modulation: with a supplied schedule, also learn :math:`h_t` on top of it
        (:math:`\eta_t = \eta\, s(r)\, e^{h_t}`, the learned schedule's layers and inputs; zero
        untrained, so the optimizer starts exactly as the unmodulated one).
      log_lr_bounds: ``(low, high)``: the learned schedule's :math:`h_t` stays inside, so
        :math:`\eta_t \in (\eta e^{low}, \eta e^{high})`
        (:func:`~lopt_cli.optimizers.schedule.bounded_log_rate`).
    """

    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "learned"
    schedule_hidden: int = 16
    schedule_modulation: bool = False
    log_lr_bounds: tuple[float, float] = sched.LOG_LR_BOUNDS

    def __post_init__(self):
        super().__post_init__()
        name = type(self).__name__
        if self.schedule_modulation and self.schedule == "learned":
            raise LoptUserError(
                f"{name}: schedule_modulation=true modulates a supplied schedule, and "
                "schedule=learned is already learned; choose a supplied schedule ("
                + ", ".join(s for s in sched.SCHEDULES if s != "learned")
                + ") or set schedule_modulation=false")
        if self.schedule_width == 0 and (self.schedule == "learned" or self.schedule_modulation):
            which = "schedule=learned" if self.schedule == "learned" else "schedule_modulation"
            raise LoptUserError(f"{name}: {which} needs schedule_hidden > 0")

    @property
    def schedule_width(self) -> int:
        """Hidden width of the learned schedule (learned or modulating a supplied one); 0 (no
        schedule layers) for a supplied schedule alone."""
        learns = self.schedule == "learned" or self.schedule_modulation
        return self.schedule_hidden if learns else 0

    @property
    def num_features(self) -> int:
        """Per-parameter inputs ``K`` of the rule's network (each subclass derives it)."""
        raise NotImplementedError

    def network_init_args(self) -> tuple:
        return (jnp.zeros((1, self.num_features)), jnp.zeros((feats.num_tensor_features(),)),
                jnp.zeros((sched.num_schedule_features(),)))

    def network_paths(self, key: jax.Array) -> list[NetworkPath]:
        """The rule's ``channels`` against :meth:`ScheduledNetwork.stacked` and, when the
        schedule is learned, :meth:`ScheduledNetwork.log_rate` against its reference."""
        keys = jax.random.split(key, self.num_features + 2)
        channels = [jax.random.normal(k, (7, 5)) for k in keys[:self.num_features]]
        tensor_x = jax.random.normal(keys[-2], (feats.num_tensor_features(),))
        paths = [NetworkPath("per_param", type(self.network).channels,
                             ScheduledNetwork.stacked, (channels, tensor_x))]
        if self.schedule_width:
            schedule_x = jax.random.normal(keys[-1], (sched.num_schedule_features(),))
            paths.append(NetworkPath("schedule", ScheduledNetwork.log_rate,
                                     ScheduledNetwork.log_rate_reference, (schedule_x,)))
        return paths

    def init_shared_state(self, num_tensors: int) -> dict[str, Any]:
        del num_tensors
        return {"loss_stats": sched.init_schedule_state()}

    def rate(self, theta: MetaParams, loss_x: hfeats.LossFeatures, count: jax.Array,
             num_steps: jax.Array | int) -> jax.Array:
        r""":math:`\eta_t = \eta\, s(r)\, e^{h_t}` for the update after ``count`` ones."""
        r = sched.progress(count, num_steps)
        rate = self.learning_rate * sched.supplied_factor(self.schedule, r)
        if self.schedule_width:
            x = sched.schedule_features(loss_x, r, num_steps)
            rate = rate * jnp.exp(self.network.apply(theta, x, method="log_rate"))
        return rate

    def step_tensors(
        self, theta: MetaParams, inputs: list[TensorInput | None], states: list,
        shared: dict[str, Any], extra_args: dict[str, Any],
    ) -> tuple[list[jax.Array | None], list, dict[str, Any]]:
        """The global rate from ``loss=``/``valid_loss=`` (either may be missing or NaN), then
        every tensor's step :math:`\\eta_t (u - \\lambda p)`."""
        loss_x, loss_stats = hfeats.observe_losses(
            shared["loss_stats"], extra_args.get("loss"), extra_args.get("valid_loss"),
            sched.LOSS_DECAYS)
        directions, states, _ = super().step_tensors(theta, inputs, states, {}, {})
        present = [x for x in inputs if x is not None]
        if not present:
            return directions, states, {"loss_stats": loss_stats}
        rate = self.rate(theta, loss_x, present[0].count, present[0].num_steps)
        steps = [None if u is None else rate * (u - self.weight_decay * x.param)
                 for u, x in zip(directions, inputs)]
        return steps, states, {"loss_stats": loss_stats}

    def step_tensor(self, theta: MetaParams, x: TensorInput, state: Any
                    ) -> tuple[jax.Array, Any]:
        """The direction :math:`u` of one tensor (its step at rate 1, descent sign included,
        before weight decay) and its new ``TensorState``."""
        raise NotImplementedError
