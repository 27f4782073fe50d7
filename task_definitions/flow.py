r"""RealNVP normalising flows (Dinh et al. 2017) on procedurally generated 2-D densities.

The flow maps data :math:`x` to a latent :math:`z = f(x)` with a standard normal base through
``num_layers`` affine coupling layers with alternating binary masks :math:`m`,

.. math:: y = m \odot x + (1 - m) \odot \big(x \odot e^{s(m \odot x)} + t(m \odot x)\big),

whose conditioners :math:`s, t` are one MLP (final layer zero-initialised, so the flow starts as
the identity) and whose log-scales are soft-clamped, :math:`s = 3 \tanh(\hat s / 3)`. Then

.. math:: \log p(x) = \log \mathcal N(f(x); 0, I) + \sum_{\text{layers}} \sum_d (1 - m_d)\, s_d,

and the loss is the negative log-likelihood per dimension, :math:`-\log p(x) / D`.

The densities are Gaussian mixtures laid out along a shape (``moons``, ``rings``, ``gaussians``
on a circle, ``spiral``, ``grid``), randomly rotated with ``config.seed`` and scaled to a sampled
standard deviation ``data_scale`` per dimension, so their exact log-density is known.
Normalisation uses it:

.. math:: \tilde\ell = \frac{\ell - H}{\ell_{\mathcal N} - H},

where :math:`H` is the data's differential entropy per dimension (Monte-Carlo estimate, so
:math:`\ell - H` estimates :math:`\mathrm{KL}(p_{\text{data}} \,\|\, p_{\text{model}}) / D`)
and :math:`\ell_{\mathcal N}` the loss of the standard normal, i.e. of the identity flow at
initialisation: the initial flow scores 1, a perfect model 0 (ceiling 2). The best-fitting
Gaussian's loss :math:`\ell_G` is kept as ``gaussian_loss`` for reference: with data scales
below 1 it scores about 0.3-0.6, so fitting the scale is the fast first phase of training and
the data's structure the slow second one.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.base import normalize_by_ceiling, sample_from_arrays
from task_definitions.mlp import ACTIVATIONS
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

SPLIT_SIZES = {"train": 4096, "valid": 1024, "test": 1024}
LOG_SCALE_CLAMP = 3.0


# --- the densities ------------------------------------------------------------------------------


def _arc(start: float, stop: float, num: int) -> np.ndarray:
    angles = np.linspace(start, stop, num)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def shape_centres(name: str) -> np.ndarray:
    """The mixture component centres ``[M, 2]`` of a named shape (before rotation/scaling)."""
    if name == "moons":
        outer = _arc(0.0, np.pi, 64)
        return np.concatenate([outer, outer * [-1.0, -1.0] + [1.0, 0.5]])
    if name == "rings":
        return np.concatenate([_arc(0, 2 * np.pi, 96)[:-1] * r for r in (1.0, 2.0)])
    if name == "gaussians":
        return _arc(0, 2 * np.pi, 9)[:-1] * 2.0
    if name == "spiral":
        t = np.linspace(0.5, 3.0, 128)
        return t[:, None] * np.stack([np.cos(2.5 * t), np.sin(2.5 * t)], axis=1)
    if name == "grid":
        ticks = np.arange(4.0) - 1.5
        return np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
    raise ValueError(f"dataset={name!r}: expected one of {DENSITIES}")


DENSITIES = ("moons", "rings", "gaussians", "spiral", "grid")


@dataclasses.dataclass(frozen=True)
class Mixture:
    """An isotropic Gaussian mixture with equal weights: centres ``[M, D]`` and one std."""

    centres: np.ndarray
    std: float

    def sample(self, rng: np.random.Generator, num: int) -> np.ndarray:
        picks = self.centres[rng.integers(len(self.centres), size=num)]
        return picks + self.std * rng.normal(size=picks.shape)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact ``log p(x)`` for ``x [n, D]``."""
        dim = self.centres.shape[1]
        sq = np.sum(np.square(x[:, None, :] - self.centres[None]), axis=-1)
        log_norm = -0.5 * dim * math.log(2 * math.pi * self.std**2) - math.log(len(self.centres))
        logits = -0.5 * sq / self.std**2
        top = logits.max(axis=1)
        return top + np.log(np.sum(np.exp(logits - top[:, None]), axis=1)) + log_norm


def make_mixture(name: str, noise: float, seed: int, data_scale: float = 1.0) -> Mixture:
    """The shape with component std ``noise``, rotated by ``seed``, scaled to std ``data_scale``."""
    centres = shape_centres(name)
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centres = centres @ rotation.T
    centres = centres - centres.mean(axis=0)
    variance = np.mean(np.square(centres)) + noise**2  # per-dimension variance of the mixture
    scale = data_scale / math.sqrt(variance)
    return Mixture(centres * scale, noise * scale)


@functools.lru_cache(maxsize=64)
def density_arrays(name: str, noise: float, seed: int, data_scale: float = 1.0) -> tuple:
    """``({split: {"x": float32 [n, 2]}}, entropy, standard normal's and best Gaussian's loss)``
    (the last three per dimension)."""
    mixture = make_mixture(name, noise, seed, data_scale)
    rng = np.random.default_rng([seed, 1])
    data = {split: {"x": mixture.sample(rng, n).astype(np.float32)}
            for split, n in SPLIT_SIZES.items()}
    reference = mixture.sample(rng, 20000)
    dim = reference.shape[1]
    entropy = -float(np.mean(mixture.log_prob(reference))) / dim
    _, log_det = np.linalg.slogdet(np.cov(reference, rowvar=False))
    gaussian_loss = 0.5 * math.log(2 * math.pi * math.e) + 0.5 * log_det / dim
    normal_loss = 0.5 * math.log(2 * math.pi) + 0.5 * float(np.mean(np.square(reference)))
    return data, entropy, normal_loss, gaussian_loss


# --- the flow -----------------------------------------------------------------------------------


def coupling_mask(layer: int, dim: int) -> jnp.ndarray:
    """The alternating binary mask of coupling layer ``layer`` (1 = passed through)."""
    return jnp.asarray((np.arange(dim) + layer) % 2 == 0, jnp.float32)


class Conditioner(nn.Module):
    """MLP from the masked input to ``(shift, log_scale)``; its last layer starts at zero."""

    hidden_sizes: tuple
    activation: str
    dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple:
        hidden = x
        for width in self.hidden_sizes:
            hidden = ACTIVATIONS[self.activation](nn.Dense(width)(hidden))
        out = nn.Dense(2 * self.dim, kernel_init=nn.initializers.zeros, name="out")(hidden)
        shift, raw_log_scale = jnp.split(out, 2, axis=-1)
        return shift, LOG_SCALE_CLAMP * jnp.tanh(raw_log_scale / LOG_SCALE_CLAMP)


class RealNVP(nn.Module):
    """Affine coupling layers; ``__call__`` maps data to latents and returns the log-det."""

    num_layers: int
    hidden_sizes: tuple
    activation: str
    dim: int

    def setup(self):
        self.conditioners = [Conditioner(self.hidden_sizes, self.activation, self.dim)
                             for _ in range(self.num_layers)]

    def __call__(self, x: jax.Array) -> tuple:
        log_det = jnp.zeros(x.shape[:-1])
        for i, conditioner in enumerate(self.conditioners):
            mask = coupling_mask(i, self.dim)
            shift, log_scale = conditioner(x * mask)
            x = mask * x + (1 - mask) * (x * jnp.exp(log_scale) + shift)
            log_det = log_det + jnp.sum((1 - mask) * log_scale, axis=-1)
        return x, log_det

    def inverse(self, z: jax.Array) -> jax.Array:
        for i in reversed(range(self.num_layers)):
            mask = coupling_mask(i, self.dim)
            shift, log_scale = self.conditioners[i](z * mask)
            z = mask * z + (1 - mask) * (z - shift) * jnp.exp(-log_scale)
        return z


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """One flow on a 2-D density: ``noise`` is the component std relative to the shape (before
    scaling), ``data_scale`` the data's standard deviation per dimension."""

    dataset: str
    noise: float
    data_scale: float
    num_layers: int
    hidden_sizes: tuple
    activation: str
    batch_size: int
    init_scale: float
    seed: int


@struct.dataclass
class FlowTask:
    """A RealNVP density model; data and the normaliser are leaves, the architecture static."""

    data: dict
    entropy: jax.Array
    normal_loss: jax.Array
    gaussian_loss: jax.Array
    init_scale: jax.Array
    num_layers: int = struct.field(pytree_node=False)
    hidden_sizes: tuple = struct.field(pytree_node=False)
    activation: str = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)

    @property
    def dim(self) -> int:
        return self.data["train"]["x"].shape[-1]

    def model(self) -> RealNVP:
        return RealNVP(self.num_layers, self.hidden_sizes, self.activation, self.dim)

    def init(self, key: jax.Array) -> dict:
        params = self.model().init(key, jnp.zeros((1, self.dim)))["params"]
        return jax.tree_util.tree_map(
            lambda leaf: leaf * self.init_scale if leaf.ndim >= 2 else leaf, params)

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        return sample_from_arrays(key, self.data[split], self.batch_size)

    def log_prob(self, params: dict, x: jax.Array) -> jax.Array:
        """``log p(x)`` under the flow, for ``x [..., dim]``."""
        z, log_det = self.model().apply({"params": params}, x)
        log_base = -0.5 * jnp.sum(jnp.square(z), axis=-1) - 0.5 * self.dim * jnp.log(2 * jnp.pi)
        return log_base + log_det

    def sample(self, params: dict, key: jax.Array, num: int) -> jax.Array:
        """``num`` samples from the flow (inverse pass on standard normal draws)."""
        z = jax.random.normal(key, (num, self.dim))
        return self.model().apply({"params": params}, z, method=RealNVP.inverse)

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        del key
        return -jnp.mean(self.log_prob(params, batch["x"])) / self.dim

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss - self.entropy, self.normal_loss - self.entropy, 2.0)


def build_flow(config: FlowConfig) -> FlowTask:
    """Builds the flow of ``config`` and its data set (generated with NumPy from the seed)."""
    if config.dataset not in DENSITIES:
        raise ValueError(f"dataset={config.dataset!r}: expected one of {DENSITIES}")
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"activation={config.activation!r}: expected one of {list(ACTIVATIONS)}")
    data, entropy, normal_loss, gaussian_loss = density_arrays(
        config.dataset, config.noise, config.seed, config.data_scale)
    return FlowTask(
        data=jax.tree_util.tree_map(jnp.asarray, data),
        entropy=jnp.asarray(entropy, jnp.float32),
        normal_loss=jnp.asarray(max(normal_loss, entropy + 1e-3), jnp.float32),
        gaussian_loss=jnp.asarray(gaussian_loss, jnp.float32),
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        num_layers=int(config.num_layers),
        hidden_sizes=tuple(int(h) for h in config.hidden_sizes),
        activation=config.activation,
        batch_size=int(config.batch_size),
    )


@dataclasses.dataclass(frozen=True)
class FlowFamily:
    """RealNVP flows with sampled density, noise, depth, widths, activation, batch and init."""

    datasets: tuple = DENSITIES
    noise: tuple = (0.05, 0.2)
    data_scale: tuple = (0.2, 0.5)
    num_layers: tuple = (2, 4, 6)
    widths: tuple = (16, 32, 64)
    depths: tuple = (1, 2)
    activations: tuple = ("relu", "tanh", "gelu", "swish")
    batch_sizes: tuple = (64, 128, 256)
    init_scale: tuple = (0.5, 2.0)
    name: str = "flow"

    def sample(self, key: jax.Array) -> FlowConfig:
        rng = generator_from_key(key)
        depth = int(choice(rng, self.depths))
        return FlowConfig(
            dataset=str(choice(rng, self.datasets)),
            noise=log_uniform(rng, *self.noise),
            data_scale=log_uniform(rng, *self.data_scale),
            num_layers=int(choice(rng, self.num_layers)),
            hidden_sizes=tuple(int(choice(rng, self.widths)) for _ in range(depth)),
            activation=str(choice(rng, self.activations)),
            batch_size=int(choice(rng, self.batch_sizes)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: FlowConfig) -> FlowTask:
        return build_flow(config)
