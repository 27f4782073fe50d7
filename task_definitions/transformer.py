r"""Small causal transformer language models on the character corpus.

Tokens get a learned embedding plus a learned positional embedding; ``num_layers`` pre-LayerNorm
blocks follow,

.. math:: x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x)),\qquad
          x \leftarrow x + W_2\,\mathrm{gelu}(W_1\,\mathrm{LN}(x)),

with causal multi-head self-attention (position :math:`t` attends to :math:`\le t` only); a final
LayerNorm and a dense readout give next-character logits. Loss and normalisation are those of
:mod:`task_definitions.char_rnn` (cross-entropy over :math:`\log V`).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from task_definitions.char_rnn import READOUT_INIT, TextLMTask, device_text
from task_definitions.sampling import choice, generator_from_key, log_uniform, task_seed


class Block(nn.Module):
    """One pre-LayerNorm transformer block: causal self-attention, then a GELU MLP."""

    d_model: int
    num_heads: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = nn.LayerNorm(name="ln_attn")(x)
        x = x + nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, qkv_features=self.d_model, name="attn")(h, h, mask=mask)
        h = nn.LayerNorm(name="ln_mlp")(x)
        h = nn.gelu(nn.Dense(self.mlp_ratio * self.d_model, name="mlp_in")(h))
        return x + nn.Dense(self.d_model, name="mlp_out")(h)


class CausalTransformer(nn.Module):
    """Token + learned positional embeddings, pre-LN blocks, final LN, dense readout."""

    vocab_size: int
    max_len: int
    d_model: int
    num_heads: int
    num_layers: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        length = tokens.shape[-1]
        positions = self.param("pos_embed", nn.initializers.normal(0.02),
                               (self.max_len, self.d_model))
        embed = nn.Embed(self.vocab_size, self.d_model,
                         embedding_init=nn.initializers.normal(1.0), name="embed")
        x = embed(tokens) + positions[:length]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.num_layers):
            x = Block(self.d_model, self.num_heads, self.mlp_ratio, name=f"block_{i}")(x, mask)
        x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.vocab_size, kernel_init=READOUT_INIT, name="readout")(x)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """One sampled causal transformer LM."""

    dataset: str
    d_model: int
    num_heads: int
    num_layers: int
    mlp_ratio: int
    seq_len: int
    batch_size: int
    init_scale: float
    seed: int


@struct.dataclass
class TransformerLMTask(TextLMTask):
    """A transformer LM; the corpus is a leaf, the architecture static."""

    d_model: int = struct.field(pytree_node=False, default=32)
    num_heads: int = struct.field(pytree_node=False, default=2)
    num_layers: int = struct.field(pytree_node=False, default=1)
    mlp_ratio: int = struct.field(pytree_node=False, default=4)

    def model(self) -> CausalTransformer:
        return CausalTransformer(self.vocab_size, self.seq_len, self.d_model, self.num_heads,
                                 self.num_layers, self.mlp_ratio)


def build_transformer_lm(config: TransformerConfig) -> TransformerLMTask:
    """Builds the transformer LM of ``config`` over its corpus (built offline on first use)."""
    if config.d_model % config.num_heads:
        raise ValueError(f"d_model={config.d_model} is not divisible by "
                         f"num_heads={config.num_heads}")
    data, vocab_size = device_text(config.dataset)
    return TransformerLMTask(
        data=data,
        init_scale=jnp.asarray(config.init_scale, jnp.float32),
        vocab_size=vocab_size,
        seq_len=config.seq_len,
        batch_size=config.batch_size,
        d_model=config.d_model,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        mlp_ratio=config.mlp_ratio,
    )


@dataclasses.dataclass(frozen=True)
class TransformerFamily:
    """Causal transformer LMs with sampled width, heads, depth, context, batch and init scale.

    Head counts that do not divide the sampled width are redrawn among those that do.
    """

    datasets: tuple = ("text",)
    d_models: tuple = (16, 32, 64)
    num_heads: tuple = (1, 2, 4)
    num_layers: tuple = (1, 2)
    mlp_ratios: tuple = (2, 4)
    seq_lens: tuple = (16, 32, 64)
    batch_sizes: tuple = (8, 16, 32)
    init_scale: tuple = (0.5, 1.5)
    name: str = "transformer"

    def sample(self, key: jax.Array) -> TransformerConfig:
        rng = generator_from_key(key)
        d_model = int(choice(rng, self.d_models))
        heads = tuple(h for h in self.num_heads if d_model % h == 0) or (1,)
        return TransformerConfig(
            dataset=str(choice(rng, self.datasets)),
            d_model=d_model,
            num_heads=int(choice(rng, heads)),
            num_layers=int(choice(rng, self.num_layers)),
            mlp_ratio=int(choice(rng, self.mlp_ratios)),
            seq_len=int(choice(rng, self.seq_lens)),
            batch_size=int(choice(rng, self.batch_sizes)),
            init_scale=log_uniform(rng, *self.init_scale),
            seed=task_seed(rng),
        )

    def build(self, config: TransformerConfig) -> TransformerLMTask:
        return build_transformer_lm(config)
