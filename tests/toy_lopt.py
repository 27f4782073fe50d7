"""A one-parameter learned optimizer (SGD with a learned log learning rate) for unit tests."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from lopt_cli.optimizers.small_lopt import SmallLOpt


@dataclasses.dataclass(frozen=True)
class LearnedLRSGD:
    initial_log_lr: float = -3.0

    def init(self, key):
        del key
        return {"log_lr": jnp.asarray(self.initial_log_lr, jnp.float32)}

    def transform(self, theta, num_steps):
        del num_steps

        def init(params):
            del params
            return optax.EmptyState()

        def update(grads, state, params=None, **extra):
            del params, extra
            step = -jnp.exp(theta["log_lr"])
            return jax.tree_util.tree_map(lambda g: (step * g).astype(g.dtype), grads), state

        return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass(frozen=True)
class ScheduledSmallLOpt(SmallLOpt):
    """:class:`SmallLOpt` (the "update rule") times a learned log learning rate ``h`` in a layer
    named ``schedule_out`` (the "schedule", as two-phase meta-training tells them apart):
    the step is ``exp(h)`` times SmallLOpt's. ``h`` starts at 0 (SmallLOpt exactly)."""

    def init(self, key):
        theta = super().init(key)
        schedule = {"schedule_out": {"bias": jnp.zeros((), jnp.float32)}}
        return {"params": {**theta["params"], **schedule}}

    def transform(self, theta, num_steps):
        layers = dict(theta["params"])
        log_lr = layers.pop("schedule_out")["bias"]
        rule = super().transform({"params": layers}, num_steps)

        def update(grads, state, params=None, **extra):
            updates, state = rule.update(grads, state, params, **extra)
            return jax.tree_util.tree_map(lambda u: u * jnp.exp(log_lr), updates), state

        return optax.GradientTransformationExtraArgs(rule.init, update)
