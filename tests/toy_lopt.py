"""A one-parameter learned optimizer (SGD with a learned log learning rate) for unit tests."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax


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
