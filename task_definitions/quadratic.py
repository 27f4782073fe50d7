r"""Random quadratic bowls.

.. math::  f(x) = \tfrac12 (x - x^*)^\top A (x - x^*),\quad A = Q\,\mathrm{diag}(\lambda)\,Q^\top

with eigenvalues :math:`\lambda` log-spaced over the sampled condition number and a random
rotation :math:`Q`. With ``noise > 0`` the gradient is stochastic: each batch perturbs the
minimum, :math:`x^* + \mathrm{noise}\cdot\xi`, so the loss is a noisy estimate of the bowl.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.base import normalize_by_ceiling
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed


@dataclasses.dataclass(frozen=True)
class QuadraticConfig:
    """One sampled bowl: ``dim`` fixes the shapes; the rest only the values."""

    dim: int
    condition_number: float
    noise: float
    init_scale: float
    seed: int


@struct.dataclass
class QuadraticTask:
    """A bowl as a pytree: the matrix and minimum are leaves, the dimension is static."""

    matrix: jax.Array
    minimum: jax.Array
    noise: jax.Array
    init_scale: jax.Array
    loss_scale: jax.Array
    dim: int = struct.field(pytree_node=False)

    def init(self, key: jax.Array) -> dict:
        return {"x": self.init_scale * jax.random.normal(key, (self.dim,))}

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        del split
        return {"shift": self.noise * jax.random.normal(key, (self.dim,))}

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        del key
        delta = params["x"] - self.minimum - batch["shift"]
        return 0.5 * delta @ (self.matrix @ delta)

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss, self.loss_scale, ceiling=4.0)


def build_quadratic(config: QuadraticConfig) -> QuadraticTask:
    """Builds the bowl of ``config`` deterministically from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(config.dim, config.dim)))
    eigenvalues = np.geomspace(1.0, config.condition_number, config.dim)
    matrix = (rotation * eigenvalues) @ rotation.T
    minimum = rng.normal(size=config.dim) * 0.5
    expected_init_loss = 0.5 * eigenvalues.sum() * (config.init_scale**2 + 0.25)
    return QuadraticTask(
        matrix=jnp.asarray(matrix, jnp.float32),
        minimum=jnp.asarray(minimum, jnp.float32),
        noise=jnp.asarray(config.noise, jnp.float32),
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        loss_scale=jnp.asarray(expected_init_loss, jnp.float32),
        dim=config.dim,
    )


@dataclasses.dataclass(frozen=True)
class QuadraticFamily:
    """Bowls of sampled dimension, conditioning, gradient noise and initial distance."""

    dims: tuple = (4, 16, 32)
    condition_number: tuple = (1.0, 1000.0)
    noise: tuple = (0.0, 0.0, 0.1)
    init_scale: tuple = (0.5, 3.0)
    name: str = "quadratic"

    def sample(self, key: jax.Array) -> QuadraticConfig:
        rng = generator_from_key(key)
        return QuadraticConfig(
            dim=int(choice(rng, self.dims)),
            condition_number=log_uniform(rng, *self.condition_number),
            noise=float(choice(rng, self.noise)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: QuadraticConfig) -> QuadraticTask:
        return build_quadratic(config)
