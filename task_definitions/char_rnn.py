r"""Character-level recurrent language models on the text corpus.

A sequence of characters :math:`c_1 \dots c_{T+1}` (a random crop of a stored sequence) is
embedded, run through a recurrent cell (LSTM, GRU or a simple :math:`\tanh` RNN, all flax.linen
cells driven by ``nn.RNN``) and read out into next-character logits. The loss is the mean
next-character cross-entropy

.. math:: \ell = -\frac{1}{T}\sum_{t=1}^{T} \log p(c_{t+1} \mid c_{\le t}),

normalised by :math:`\log V` (``V`` = vocabulary size), so that uniform predictions score 1.

The helpers for the corpus (:func:`text_arrays`, :func:`sample_crops`, :func:`next_token_loss`)
are shared with :mod:`task_definitions.transformer`.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from task_definitions.base import normalize_by_ceiling
from task_definitions.orthogonal import orthogonal
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}
# flax's default recurrent init (orthogonal), computed without LAPACK: batched QR hangs on CPU.
RECURRENT_INIT = orthogonal()
# Small readout initialisation: logits start near zero, so the initial loss is close to log V.
READOUT_INIT = nn.initializers.variance_scaling(0.1, "fan_in", "normal")


# --- the corpus, shared by the sequence families ------------------------------------------------


@functools.cache
def text_arrays(dataset: str = "text") -> tuple[dict, int]:
    """``({split: {"tokens": int32 [n, L]}}, vocab_size)`` of a token corpus (built on first use)."""
    from task_definitions.datasets import load_arrays, vocab_size

    splits = load_arrays(dataset)
    out = {split: {"tokens": np.asarray(arrays["tokens"], np.int32)}
           for split, arrays in splits.items()}
    return out, int(vocab_size(dataset))


def device_text(dataset: str) -> tuple[dict, int]:
    """The corpus as device arrays plus its vocabulary size."""
    arrays, vocab_size = text_arrays(dataset)
    return jax.tree_util.tree_map(jnp.asarray, arrays), vocab_size


def sample_crops(key: jax.Array, tokens: jax.Array, batch_size: int, length: int) -> jax.Array:
    """``batch_size`` random crops of ``length`` consecutive tokens (rows drawn with replacement)."""
    row_key, offset_key = jax.random.split(key)
    num_rows, stored = tokens.shape
    if length > stored:
        raise ValueError(f"crop of {length} tokens from sequences of {stored}")
    rows = jax.random.randint(row_key, (batch_size,), 0, num_rows)
    offsets = jax.random.randint(offset_key, (batch_size,), 0, stored - length + 1)
    return jax.vmap(lambda r, o: jax.lax.dynamic_slice(tokens[r], (o,), (length,)))(rows, offsets)


def next_token_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy of ``logits [..., V]`` against integer ``targets [...]``."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.mean(jnp.take_along_axis(log_probs, targets[..., None], axis=-1))


def scale_weights(params: dict, scale: jax.Array, skip: tuple = ("readout",)) -> dict:
    """Multiplies every weight matrix and embedding (not biases, norms or ``skip``) by ``scale``."""

    def visit(path, leaf):
        names = [getattr(p, "key", "") for p in path]
        if any(n in skip for n in names) or leaf.ndim < 2:
            return leaf
        return leaf * scale.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(visit, params)


@struct.dataclass
class TextLMTask:
    """Shared behaviour of the language-model tasks: batches, loss and normalisation.

    Subclasses provide ``model()`` (a flax module mapping tokens ``[B, T]`` to logits).
    """

    data: dict
    init_scale: jax.Array
    vocab_size: int = struct.field(pytree_node=False)
    seq_len: int = struct.field(pytree_node=False)
    batch_size: int = struct.field(pytree_node=False)

    def model(self) -> nn.Module:
        raise NotImplementedError

    def init(self, key: jax.Array) -> dict:
        return _init_lm(self, key)

    def sample_batch(self, key: jax.Array, split: str) -> dict:
        """``{"tokens": int32 [batch_size, seq_len + 1]}``: inputs and shifted targets."""
        return {"tokens": sample_crops(key, self.data[split]["tokens"], self.batch_size,
                                       self.seq_len + 1)}

    def logits(self, params: dict, tokens: jax.Array) -> jax.Array:
        return self.model().apply({"params": params}, tokens)

    def loss(self, params: dict, batch: dict, key: jax.Array) -> jax.Array:
        del key
        tokens = batch["tokens"]
        return next_token_loss(self.logits(params, tokens[:, :-1]), tokens[:, 1:])

    def normalize(self, loss: jax.Array) -> jax.Array:
        return normalize_by_ceiling(loss, jnp.log(self.vocab_size), ceiling=1.5)


@jax.jit
def _init_lm(task: TextLMTask, key: jax.Array) -> dict:
    """Flax initialisation, weights scaled by ``init_scale`` (jitted: eager flax init is slow)."""
    dummy = jnp.zeros((1, task.seq_len), jnp.int32)
    params = task.model().init(key, dummy)["params"]
    return scale_weights(params, task.init_scale)


# --- the recurrent family -----------------------------------------------------------------------


class CharRNN(nn.Module):
    """Embedding -> recurrent cell over time -> dense readout to next-character logits."""

    vocab_size: int
    embed_size: int
    hidden_size: int
    cell: str

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab_size, self.embed_size, name="embed")(tokens)
        cell = CELLS[self.cell](features=self.hidden_size, recurrent_kernel_init=RECURRENT_INIT)
        hidden = nn.RNN(cell, name="rnn")(x)
        return nn.Dense(self.vocab_size, kernel_init=READOUT_INIT, name="readout")(hidden)


@dataclasses.dataclass(frozen=True)
class CharRNNConfig:
    """One sampled character-level recurrent language model."""

    dataset: str
    cell: str
    embed_size: int
    hidden_size: int
    seq_len: int
    batch_size: int
    init_scale: float
    seed: int


@struct.dataclass
class CharRNNTask(TextLMTask):
    """A recurrent LM; the corpus is a leaf, the architecture static."""

    cell: str = struct.field(pytree_node=False, default="lstm")
    embed_size: int = struct.field(pytree_node=False, default=32)
    hidden_size: int = struct.field(pytree_node=False, default=64)

    def model(self) -> CharRNN:
        return CharRNN(self.vocab_size, self.embed_size, self.hidden_size, self.cell)


def build_char_rnn(config: CharRNNConfig) -> CharRNNTask:
    """Builds the recurrent LM of ``config`` over its corpus (built offline on first use)."""
    if config.cell not in CELLS:
        raise ValueError(f"cell={config.cell!r}: expected one of {sorted(CELLS)}")
    data, vocab_size = device_text(config.dataset)
    return CharRNNTask(
        data=data,
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        vocab_size=vocab_size,
        seq_len=config.seq_len,
        batch_size=config.batch_size,
        cell=config.cell,
        embed_size=config.embed_size,
        hidden_size=config.hidden_size,
    )


@dataclasses.dataclass(frozen=True)
class CharRNNFamily:
    """Recurrent LMs with sampled cell, embedding and hidden sizes, crop length, batch, init."""

    datasets: tuple = ("text",)
    cells: tuple = ("lstm", "gru", "rnn")
    embed_sizes: tuple = (16, 32, 64)
    hidden_sizes: tuple = (32, 64, 128)
    seq_lens: tuple = (16, 32, 64)
    batch_sizes: tuple = (8, 16, 32)
    init_scale: tuple = (0.5, 2.0)
    name: str = "char_rnn"

    def sample(self, key: jax.Array) -> CharRNNConfig:
        rng = generator_from_key(key)
        return CharRNNConfig(
            dataset=str(choice(rng, self.datasets)),
            cell=str(choice(rng, self.cells)),
            embed_size=int(choice(rng, self.embed_sizes)),
            hidden_size=int(choice(rng, self.hidden_sizes)),
            seq_len=int(choice(rng, self.seq_lens)),
            batch_size=int(choice(rng, self.batch_sizes)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: CharRNNConfig) -> CharRNNTask:
        return build_char_rnn(config)
