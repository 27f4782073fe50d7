"""A learned optimizer written on the per-tensor base in a few lines, for the conformance
suite: Adam's direction times a learned per-tensor step size (an "Adam-nominal" design). It
shows (and tests) that a new architecture is a state, a flax module and a per-tensor step."""
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

SCALE = "scale"  # the module's one layer


class NominalState(NamedTuple):
    momentum: optax.Updates
    rms: optax.Updates
    grad_mean_sq: optax.Updates
    count: jax.Array


class NominalTensorState(NamedTuple):
    momentum: jax.Array
    rms: jax.Array
    grad_mean_sq: jax.Array


class LogStepScale(nn.Module):
    """Per-tensor features ``(F_t,)`` → a log step size."""

    def layer_names(self) -> tuple[str, ...]:
        return (SCALE,)

    @nn.compact
    def __call__(self, tensor_x: jax.Array) -> jax.Array:
        return nn.Dense(1, kernel_init=nn.initializers.zeros, name=SCALE)(tensor_x)[0]

    def fast(self, tensor_x: jax.Array) -> jax.Array:
        layer = fm.declared_layers(self.variables["params"], self.layer_names(), "LogStepScale")
        return tensor_x @ layer[SCALE]["kernel"][:, 0] + layer[SCALE]["bias"][0]


@dataclasses.dataclass(frozen=True)
class AdamNominalLOpt(per_tensor.PerTensorLOpt):
    beta1: float = 0.9
    beta2: float = 0.999
    step_mult: float = 1e-3
    clip_mult: float = 10.0

    State = NominalState
    TensorState = NominalTensorState
    FIELD_RULES = {"beta1": per_tensor.DECAY, "beta2": per_tensor.DECAY}
    FLAT_TENSORS = False

    @property
    def network(self) -> LogStepScale:
        return LogStepScale()

    def network_init_args(self) -> tuple:
        return (jnp.zeros((feats.num_tensor_features(),)),)

    def network_paths(self, key):
        args = (jax.random.normal(key, (feats.num_tensor_features(),)),)
        return [per_tensor.NetworkPath("scale", LogStepScale.fast, LogStepScale.__call__, args)]

    def init_tensor_state(self, param):
        zeros = per_tensor.float32_zeros(jnp.shape(param))
        return NominalTensorState(zeros, zeros, per_tensor.float32_zeros(()))

    def step_tensor(self, theta, x, state):
        m = self.beta1 * state.momentum + (1.0 - self.beta1) * x.grad
        v = self.beta2 * state.rms + (1.0 - self.beta2) * jnp.square(x.grad)
        t = x.count.astype(jnp.float32) + 1.0
        direction = (m / (1.0 - self.beta1**t)) / (jnp.sqrt(v / (1.0 - self.beta2**t)) + 1e-8)
        tensor_x = feats.tensor_features(feats.TensorContext(x.count, x.num_steps, x.grad,
                                                             x.param))
        log_scale = self.network.apply(theta, tensor_x, method=LogStepScale.fast)
        return per_tensor.exp_step(direction, log_scale, self.step_mult, 1.0), \
            NominalTensorState(m, v, state.grad_mean_sq)


@dataclasses.dataclass(frozen=True)
class LearningRateNominalLOpt(AdamNominalLOpt):
    """The same design with a base learning rate (``learning_rate``): its step is Adam's at
    that rate times the learned scale, as in the architectures that take one."""

    learning_rate: float = 1e-3

    def step_tensor(self, theta, x, state):
        step, state = super().step_tensor(theta, x, state)
        return step * (self.learning_rate / self.step_mult), state
