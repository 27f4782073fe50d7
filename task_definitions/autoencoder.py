r"""MLP autoencoders on small vector or image datasets held on the device.

An input :math:`x \in \mathbb R^D` (an image is flattened) is encoded by an MLP with the sampled
hidden widths to a bottleneck code :math:`z = E(x)` (linear, no activation), then decoded by the
mirrored MLP to :math:`\hat x = D(z)` (linear output, whose weights start 10x smaller, so
that initial reconstructions are near zero). The loss is the mean squared
reconstruction error

.. math:: \ell = \frac1{BD} \sum_{b, d} (\hat x_{bd} - x_{bd})^2 ,

normalised by the data variance :math:`\frac1D \sum_d \mathrm{Var}(x_d)` (on the training
split), so that predicting the mean input scores 1.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.base import normalize_by_ceiling, sample_from_arrays
from task_definitions.mlp import ACTIVATIONS
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

# The decoder's last layer starts small, so initial reconstructions are near 0 and the initial
# normalised loss is E[x²] / Var(x) (about 1.8 on digits, 1 on MNIST-1D), not at the ceiling.
READOUT_SCALE = 0.1


@functools.cache
def vector_arrays(dataset: str) -> dict:
    """``{split: {"x": float32 [n, D]}}``: a dataset's inputs (images flattened), no labels."""
    from task_definitions.datasets import load_arrays

    out = {}
    for split, arrays in load_arrays(dataset).items():
        inputs = arrays["image"] if "image" in arrays else arrays["x"]
        out[split] = {"x": np.asarray(inputs, np.float32).reshape(len(inputs), -1)}
    return out


def data_variance(inputs: np.ndarray) -> float:
    """Mean over features of the per-feature variance: the MSE of predicting the mean input."""
    return float(np.mean(np.var(np.asarray(inputs, np.float64), axis=0)))


@functools.cache
def train_variance(dataset: str) -> float:
    """:func:`data_variance` of a dataset's training split (cached per dataset)."""
    return data_variance(vector_arrays(dataset)["train"]["x"])


def mlp_init(key: jax.Array, sizes: tuple, scale: jax.Array) -> dict:
    """``{"layer_i": {"w", "b"}}`` with weights ``N(0, scale² / fan_in)`` and zero biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return {f"layer_{i}": {"w": scale * jax.random.normal(k, (fan_in, fan_out)) / jnp.sqrt(fan_in),
                           "b": jnp.zeros((fan_out,))}
            for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:]))}


def mlp_apply(layers: dict, inputs: jax.Array, activation: str) -> jax.Array:
    """The MLP of ``layers``: ``activation`` between layers, a linear output."""
    fn = ACTIVATIONS[activation]
    hidden = inputs
    for i in range(len(layers)):
        hidden = hidden @ layers[f"layer_{i}"]["w"] + layers[f"layer_{i}"]["b"]
        if i < len(layers) - 1:
            hidden = fn(hidden)
    return hidden


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """One sampled MLP autoencoder: encoder widths (mirrored by the decoder) and bottleneck."""

    dataset: str
    hidden_sizes: tuple
    bottleneck: int
    activation: str
    batch_size: int
    init_scale: float
    seed: int


@struct.dataclass
class AutoencoderTask:
    """An MLP autoencoder; the data splits are leaves, the architecture static."""

    data: dict
    variance: jax.Array
    init_scale: jax.Array
    hidden_sizes: tuple = struct.field(pytree_node=False)
    bottleneck: int = struct.field(pytree_node=False)
    activation: str = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)

    @property
    def input_dim(self) -> int:
        return self.data["train"]["x"].shape[-1]

    def init(self, key: jax.Array) -> dict:
        enc_key, dec_key = jax.random.split(key)
        encoder_sizes = (self.input_dim, *self.hidden_sizes, self.bottleneck)
        decoder = mlp_init(dec_key, encoder_sizes[::-1], self.init_scale)
        readout = decoder[f"layer_{len(decoder) - 1}"]
        readout["w"] = READOUT_SCALE * readout["w"]
        return {"encoder": mlp_init(enc_key, encoder_sizes, self.init_scale), "decoder": decoder}

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        return sample_from_arrays(key, self.data[split], self.batch_size)

    def encode(self, params: dict, inputs: jax.Array) -> jax.Array:
        return mlp_apply(params["encoder"], inputs, self.activation)

    def reconstruct(self, params: dict, inputs: jax.Array) -> jax.Array:
        return mlp_apply(params["decoder"], self.encode(params, inputs), self.activation)

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        del key
        return jnp.mean(jnp.square(self.reconstruct(params, batch["x"]) - batch["x"]))

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss, self.variance, ceiling=4.0)


def build_autoencoder(config: AutoencoderConfig) -> AutoencoderTask:
    """Builds the autoencoder of ``config`` over its dataset (built offline on first use)."""
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"activation={config.activation!r}: expected one of {list(ACTIVATIONS)}")
    arrays = vector_arrays(config.dataset)
    return AutoencoderTask(
        data=jax.tree_util.tree_map(jnp.asarray, arrays),
        variance=jnp.asarray(train_variance(config.dataset), jnp.float32),
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        hidden_sizes=tuple(int(h) for h in config.hidden_sizes),
        bottleneck=int(config.bottleneck),
        activation=config.activation,
        batch_size=int(config.batch_size),
    )


@dataclasses.dataclass(frozen=True)
class AutoencoderFamily:
    """Autoencoders with sampled widths, depth, bottleneck, activation, batch size and init."""

    datasets: tuple = ("digits", "mnist1d")
    widths: tuple = (32, 64, 128)
    depths: tuple = (0, 1, 2)
    bottlenecks: tuple = (4, 8, 16)
    activations: tuple = ("relu", "tanh", "gelu", "swish")
    batch_sizes: tuple = (32, 64, 128)
    init_scale: tuple = (0.5, 2.0)
    name: str = "autoencoder"

    def sample(self, key: jax.Array) -> AutoencoderConfig:
        rng = generator_from_key(key)
        depth = int(choice(rng, self.depths))
        # Encoder widths shrink toward the bottleneck (the decoder mirrors them).
        widths = sorted((int(choice(rng, self.widths)) for _ in range(depth)), reverse=True)
        return AutoencoderConfig(
            dataset=str(choice(rng, self.datasets)),
            hidden_sizes=tuple(widths),
            bottleneck=int(choice(rng, self.bottlenecks)),
            activation=str(choice(rng, self.activations)),
            batch_size=int(choice(rng, self.batch_sizes)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: AutoencoderConfig) -> AutoencoderTask:
        return build_autoencoder(config)
