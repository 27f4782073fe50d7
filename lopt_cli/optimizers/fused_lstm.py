r"""The hierarchical optimizer's per-tensor network with its small products fused.

flax's ``nn.LSTMCell`` applies eight ``Dense`` layers per step (``ii, if, ig, io`` on the input,
``hi, hf, hg, ho`` with biases on the hidden state), and the three heads on the LSTM output are
three more: eleven tiny products per inner step between the per-tensor statistics and the
per-parameter MLP. Here the same variables are applied as two products:

.. math::
    (z_i, z_f, z_g, z_o) &= [x, h] \begin{bmatrix} W_{ii} & W_{if} & W_{ig} & W_{io} \\
        W_{hi} & W_{hf} & W_{hg} & W_{ho} \end{bmatrix} + (b_{hi}, b_{hf}, b_{hg}, b_{ho}) \\
    c' &= \sigma(z_f)\, c + \sigma(z_i) \tanh(z_g), \qquad h' = \sigma(z_o) \tanh(c') \\
    (z, s, r) &= h' \,[W_z \; W_s \; W_r] + (b_z, b_s, b_r)

(the weight concatenations depend only on :math:`\theta`, so inside an unroll XLA computes them
once, outside the loop). Equal to ``HierarchicalNetwork.per_tensor`` up to float rounding
(tested). On 2 CPU cores, an interleaved A/B of a hierarchical meta-training truncation measured
it as fast as the flax module (within 1%); it is kept for its shorter program (fewer small
kernels between the per-tensor statistics and the per-parameter MLP).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from lopt_cli.optimizers import columns as cols

GATES = ("i", "f", "g", "o")  # flax LSTMCell's gate order and variable suffixes


def lstm_cell(lstm: dict, carry: tuple[jax.Array, jax.Array], x: jax.Array):
    """``nn.LSTMCell`` with variables ``lstm`` on inputs ``x`` ``(T, F)`` and carry ``(c, h)``
    ``(T, H)`` each, as one matrix product: returns ``((c', h'), h')``."""
    c, h = carry
    kernel = jnp.concatenate([
        jnp.concatenate([lstm[f"i{g}"]["kernel"] for g in GATES], axis=1),
        jnp.concatenate([lstm[f"h{g}"]["kernel"] for g in GATES], axis=1)], axis=0)
    bias = jnp.concatenate([lstm[f"h{g}"]["bias"] for g in GATES])
    gates = jnp.concatenate([x, h], axis=-1) @ kernel + bias
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return (new_c, new_h), new_h


def dense_heads(layers: list[dict], x: jax.Array) -> list[jax.Array]:
    """Several flax ``Dense`` layers applied to the same ``x`` as one product; their outputs
    in order."""
    merged = cols.concat_dense(layers)
    out = x @ merged["kernel"] + merged["bias"]
    bounds = [0]
    for layer in layers:
        bounds.append(bounds[-1] + layer["bias"].shape[0])
    return [out[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def per_tensor(params: dict, carry: tuple[jax.Array, jax.Array], lstm_x: jax.Array):
    """``HierarchicalNetwork.per_tensor`` from its variables ``params`` (``theta["params"]``):
    ``(T, F_l)`` → carry, ``z (T, lstm_to_mlp)``, ``s (T,)``, cross vector ``(C,)``."""
    carry, h = lstm_cell(params["lstm"], carry, lstm_x)
    z, scale, cross = dense_heads(
        [params["to_mlp"], params["to_step_scale"], params["to_cross"]], h)
    return carry, z, scale[:, 0], jnp.mean(cross, axis=0)
