r"""Small convolutional classifiers on image data held on the device.

The network is a stack of ``[conv k×k (SAME) -> activation -> 2×2 pooling]`` blocks (pooling is
skipped once the feature map is 1×1), followed by a head: ``"dense"`` flattens the feature map
into a linear readout, ``"global"`` averages it over space first. Weights use flax's default
LeCun-normal initialisers multiplied by the sampled ``init_scale``; the loss is softmax
cross-entropy, normalised by :math:`\log(\text{num classes})` so that chance level is 1.

Images come from :func:`task_definitions.datasets.load_arrays` (``digits`` 8×8 by default, or a
prepared catalog dataset such as ``mnist``, ``fashion_mnist`` or ``cifar10``); with
``image_size > 0`` they are resized once, at build time, with ``jax.image.resize``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.base import normalize_by_ceiling, sample_from_arrays
from task_definitions.mlp import ACTIVATIONS
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

POOLINGS = ("max", "avg")
HEADS = ("dense", "global")


@functools.lru_cache(maxsize=8)
def image_arrays(dataset: str, image_size: int = 0) -> dict:
    """``{split: {"x": float32 [n, H, W, C], "y": int32 [n]}}``, resized to ``image_size``²."""
    from task_definitions.datasets import load_arrays
    from task_definitions.datasets.images import small_images

    out = {}
    for split, arrays in load_arrays(dataset).items():
        if "image" not in arrays:
            raise ValueError(f"dataset {dataset!r} has no 'image' feature (got {sorted(arrays)})")
        images = small_images(arrays["image"], image_size)
        out[split] = {"x": images, "y": np.asarray(arrays["label"], np.int32)}
    return out


def conv_same(images: jax.Array, kernel: jax.Array) -> jax.Array:
    r"""A stride-1 ``SAME`` convolution as one matrix product over image patches (im2col):
    :math:`y_{hw} = \sum_{i,j,c} x_{h+i-p,\,w+j-p,\,c}\,K_{ijc}`, with the patches of all
    :math:`k_h k_w` offsets concatenated along the channels. XLA's CPU convolution inside a
    ``lax.scan`` ran 30× slower than this (84 against 2.7 ms per training step of
    ``conv_wide_digits``); the result is the same up to float rounding."""
    kh, kw, _, features = kernel.shape
    height, width = images.shape[-3], images.shape[-2]
    pads = [(0, 0)] * (images.ndim - 3) + [((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2),
                                           (0, 0)]
    padded = jnp.pad(images, pads)
    patches = jnp.concatenate([padded[..., i:i + height, j:j + width, :]
                               for i in range(kh) for j in range(kw)], axis=-1)
    return patches @ kernel.reshape(-1, features)


def pool_2x2(images: jax.Array, pooling: str) -> jax.Array:
    """2×2 pooling with stride 2 and ``SAME`` padding (an odd side padded at its end), as
    ``nn.max_pool``/``nn.avg_pool`` compute it (the average counts the padding), by a reshape."""
    height, width = images.shape[-3], images.shape[-2]
    pads = [(0, 0)] * (images.ndim - 3) + [(0, height % 2), (0, width % 2), (0, 0)]
    padded = jnp.pad(images, pads, constant_values=-jnp.inf if pooling == "max" else 0.0)
    blocks = padded.reshape(*padded.shape[:-3], (height + 1) // 2, 2, (width + 1) // 2, 2,
                            padded.shape[-1])
    return blocks.max(axis=(-4, -2)) if pooling == "max" else blocks.mean(axis=(-4, -2))


class SameConv(nn.Module):
    """``nn.Conv(features, (k, k), padding="SAME")``'s parameters (names, shapes, initialisers)
    computed by :func:`conv_same`."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        shape = (self.kernel_size, self.kernel_size, images.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return conv_same(images, kernel) + bias


class ConvNet(nn.Module):
    """Conv/pool blocks and a dense or global-average-pooling head."""

    channels: tuple
    kernel_size: int
    pooling: str
    head: str
    activation: str
    num_classes: int

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        hidden = images
        for i, features in enumerate(self.channels):
            hidden = activation(SameConv(features, self.kernel_size, name=f"conv_{i}")(hidden))
            if min(hidden.shape[-3:-1]) > 1:
                hidden = pool_2x2(hidden, self.pooling)
        if self.head == "global":
            hidden = jnp.mean(hidden, axis=(-3, -2))
        else:
            hidden = hidden.reshape(*hidden.shape[:-3], -1)
        return nn.Dense(self.num_classes, name="head")(hidden)


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    """One sampled conv classifier; ``image_size = 0`` keeps the dataset's resolution."""

    dataset: str
    image_size: int
    channels: tuple
    kernel_size: int
    pooling: str
    head: str
    activation: str
    batch_size: int
    init_scale: float
    seed: int


@struct.dataclass
class ConvClassifierTask:
    """A conv classifier; the data splits are leaves, the architecture is static."""

    convolutional: ClassVar[bool] = True  # the benchmark's host-loop rule reads it

    data: dict
    init_scale: jax.Array
    channels: tuple = struct.field(pytree_node=False)
    kernel_size: int = struct.field(pytree_node=False)
    pooling: str = struct.field(pytree_node=False)
    head: str = struct.field(pytree_node=False)
    activation: str = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)
    num_classes: int = struct.field(pytree_node=False)

    def model(self) -> ConvNet:
        return ConvNet(self.channels, self.kernel_size, self.pooling, self.head,
                       self.activation, self.num_classes)

    def init(self, key: jax.Array) -> dict:
        dummy = jnp.zeros((1, *self.data["train"]["x"].shape[1:]), jnp.float32)
        params = self.model().init(key, dummy)["params"]
        return jax.tree_util.tree_map(
            lambda leaf: leaf * self.init_scale if leaf.ndim >= 2 else leaf, params)

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        return sample_from_arrays(key, self.data[split], self.batch_size)

    def logits(self, params: dict, images: jax.Array) -> jax.Array:
        return self.model().apply({"params": params}, images)

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        del key
        log_probs = jax.nn.log_softmax(self.logits(params, batch["x"]).astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(log_probs, batch["y"][:, None], axis=1))

    def accuracy(self, params: dict, batch: dict) -> jax.Array:
        return jnp.mean(jnp.argmax(self.logits(params, batch["x"]), -1) == batch["y"])

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss, jnp.log(self.num_classes), ceiling=1.5)


def build_conv_classifier(config: ConvConfig) -> ConvClassifierTask:
    """Builds the conv classifier of ``config`` over its (possibly resized) image dataset."""
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling={config.pooling!r}: expected one of {POOLINGS}")
    if config.head not in HEADS:
        raise ValueError(f"head={config.head!r}: expected one of {HEADS}")
    if config.activation not in ACTIVATIONS:
        raise ValueError(f"activation={config.activation!r}: expected one of {list(ACTIVATIONS)}")
    arrays = image_arrays(config.dataset, int(config.image_size))
    num_classes = int(max(int(split["y"].max()) for split in arrays.values()) + 1)
    return ConvClassifierTask(
        data=jax.tree_util.tree_map(jnp.asarray, arrays),
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        channels=tuple(int(c) for c in config.channels),
        kernel_size=int(config.kernel_size),
        pooling=config.pooling,
        head=config.head,
        activation=config.activation,
        batch_size=int(config.batch_size),
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class ConvFamily:
    """Conv nets with sampled depth, channels, kernel, pooling, head, activation, batch, init."""

    datasets: tuple = ("digits",)
    image_sizes: tuple = (0,)
    channels: tuple = (8, 16, 32)
    depths: tuple = (1, 2, 3)
    kernel_sizes: tuple = (2, 3)  # 5x5 works too but XLA:CPU runs it ~10x slower than 3x3
    poolings: tuple = POOLINGS
    heads: tuple = HEADS
    activations: tuple = ("relu", "tanh", "gelu", "swish")
    batch_sizes: tuple = (32, 64, 128)
    init_scale: tuple = (0.5, 2.0)
    name: str = "conv"

    def sample(self, key: jax.Array) -> ConvConfig:
        rng = generator_from_key(key)
        depth = int(choice(rng, self.depths))
        return ConvConfig(
            dataset=str(choice(rng, self.datasets)),
            image_size=int(choice(rng, self.image_sizes)),
            channels=tuple(int(choice(rng, self.channels)) for _ in range(depth)),
            kernel_size=int(choice(rng, self.kernel_sizes)),
            pooling=str(choice(rng, self.poolings)),
            head=str(choice(rng, self.heads)),
            activation=str(choice(rng, self.activations)),
            batch_size=int(choice(rng, self.batch_sizes)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: ConvConfig) -> ConvClassifierTask:
        return build_conv_classifier(config)
