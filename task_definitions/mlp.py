r"""MLP classifiers on small datasets held on the device.

The network is :math:`f(x) = W_L\,\sigma(\dots\sigma(W_1 x + b_1)\dots) + b_L` with weights drawn
from :math:`\mathcal N(0, s^2/\text{fan-in})`; the loss is softmax cross-entropy, normalised by
:math:`\log(\text{num classes})` so that chance level is 1.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.base import normalize_by_ceiling, sample_from_arrays
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

DATASET_REDRAW_SALT = 1  # the generator_from_key stream that replaces an absent optional dataset
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "swish": jax.nn.swish,
}


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """One sampled MLP classifier."""

    dataset: str
    hidden_sizes: tuple
    activation: str
    batch_size: int
    init_scale: float
    seed: int


@functools.cache
def classification_arrays(dataset: str, image_size: int = 0, grayscale: bool = False) -> dict:
    """``{split: {"x": float32 [n, d], "y": int32 [n]}}`` for an image or vector dataset; images
    are first made ``image_size``² (0: kept) and, with ``grayscale``, one luma channel."""
    from task_definitions.datasets import load_arrays
    from task_definitions.datasets.images import small_images

    splits = load_arrays(dataset)
    out = {}
    for split, arrays in splits.items():
        if "image" in arrays:
            inputs = small_images(arrays["image"], image_size, grayscale)
        else:
            inputs = arrays["x"]
        out[split] = {
            "x": np.asarray(inputs, np.float32).reshape(len(inputs), -1),
            "y": np.asarray(arrays["label"], np.int32),
        }
    return out


@functools.cache
def _available(names: tuple, data_dir: str) -> tuple:
    from task_definitions.datasets import is_available

    return tuple(name for name in names if is_available(name, data_dir))


@struct.dataclass
class MLPClassifierTask:
    """An MLP classifier; the data splits are leaves, the architecture is static."""

    data: dict
    init_scale: jax.Array
    hidden_sizes: tuple = struct.field(pytree_node=False)
    activation: str = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)
    num_classes: int = struct.field(pytree_node=False)

    def layer_sizes(self) -> tuple:
        input_dim = self.data["train"]["x"].shape[-1]
        return (input_dim, *self.hidden_sizes, self.num_classes)

    def init(self, key: jax.Array) -> dict:
        sizes = self.layer_sizes()
        keys = jax.random.split(key, len(sizes) - 1)
        return {
            f"layer_{i}": {
                "w": self.init_scale * jax.random.normal(k, (fan_in, fan_out)) / jnp.sqrt(fan_in),
                "b": jnp.zeros((fan_out,)),
            }
            for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
        }

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        return sample_from_arrays(key, self.data[split], self.batch_size)

    def logits(self, params: dict, inputs: jax.Array) -> jax.Array:
        activation = ACTIVATIONS[self.activation]
        hidden = inputs
        num_layers = len(params)
        for i in range(num_layers):
            layer = params[f"layer_{i}"]
            hidden = hidden @ layer["w"].astype(hidden.dtype) + layer["b"].astype(hidden.dtype)
            if i < num_layers - 1:
                hidden = activation(hidden)
        return hidden

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        del key
        logits = self.logits(params, batch["x"]).astype(jnp.float32)
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_probs, batch["y"][:, None], axis=1))

    def accuracy(self, params: dict, batch: dict) -> jax.Array:
        return jnp.mean(jnp.argmax(self.logits(params, batch["x"]), -1) == batch["y"])

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss, jnp.log(self.num_classes), ceiling=1.5)


def build_mlp_classifier(config: MLPConfig, image_size: int = 0,
                         grayscale: bool = False) -> MLPClassifierTask:
    """Builds the classifier of ``config`` over its dataset (built offline on first use)."""
    arrays = classification_arrays(config.dataset, image_size, grayscale)
    num_classes = int(max(int(split["y"].max()) for split in arrays.values()) + 1)
    return MLPClassifierTask(
        data=jax.tree_util.tree_map(jnp.asarray, arrays),
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        hidden_sizes=tuple(config.hidden_sizes),
        activation=config.activation,
        batch_size=config.batch_size,
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class MLPFamily:
    """MLP classifiers with sampled widths, depth, activation, batch size and init scale.

    Attributes:
      datasets: datasets always in the mix; each must be readable offline (checked here).
      optional_datasets: datasets in the mix only where they are prepared locally (TFDS
        catalog names such as ``mnist``); the others are left out silently. A task id names the
        same task on every machine that has the dataset it draws: the dataset is drawn from all
        candidates, and only a draw that is absent here is replaced, from a separate stream.
      image_size: images are resized to ``image_size``² at build time (0: native size).
      grayscale: colour images become one luma channel (else their channels are flattened).
    """

    datasets: tuple = ("digits",)
    widths: tuple = (16, 32, 64)
    depths: tuple = (1, 2)
    activations: tuple = ("relu", "tanh", "gelu", "swish")
    batch_sizes: tuple = (32, 64, 128)
    init_scale: tuple = (0.5, 2.0)
    optional_datasets: tuple = ()
    image_size: int = 0
    grayscale: bool = False
    name: str = "mlp"

    def __post_init__(self):
        from task_definitions.datasets import check_available

        for name in self.datasets:
            check_available(name)
        if not self.datasets and not self.available_datasets():
            raise ValueError("no dataset: datasets is empty and no optional dataset is prepared")

    def available_datasets(self) -> tuple:
        """``datasets`` and the ``optional_datasets`` prepared in the data directory."""
        from task_definitions.datasets import default_data_dir

        optional = _available(tuple(self.optional_datasets), str(default_data_dir()))
        return (*self.datasets, *optional)

    def draw_dataset(self, rng: np.random.Generator, key: jax.Array) -> str:
        """A dataset drawn from all candidates; an absent optional one is redrawn among the
        available ones with a stream of its own, so ``rng``'s later draws stay machine-free."""
        dataset = str(choice(rng, (*self.datasets, *self.optional_datasets)))
        available = self.available_datasets()
        if dataset in available:
            return dataset
        return str(choice(generator_from_key(key, DATASET_REDRAW_SALT), available))

    def sample(self, key: jax.Array) -> MLPConfig:
        rng = generator_from_key(key)
        depth = int(choice(rng, self.depths))
        return MLPConfig(
            dataset=self.draw_dataset(rng, key),
            hidden_sizes=tuple(int(choice(rng, self.widths)) for _ in range(depth)),
            activation=str(choice(rng, self.activations)),
            batch_size=int(choice(rng, self.batch_sizes)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: MLPConfig) -> MLPClassifierTask:
        return build_mlp_classifier(config, int(self.image_size), bool(self.grayscale))
