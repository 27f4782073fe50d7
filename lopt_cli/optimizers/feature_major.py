r"""Feature-major evaluation of a per-parameter MLP, in blocks of parameters: the building
blocks of the learned optimizers' fast paths.

The per-parameter learned optimizers (:mod:`~lopt_cli.optimizers.mlp_lopt`,
:mod:`~lopt_cli.optimizers.hierarchical`) apply one small MLP to every entry of a tensor. Their
flax modules define that MLP row-major (``(n, F)`` inputs, flax ``Dense``: the reference) and
evaluate it *feature-major* in the optimizer: ``x`` is ``(F, n)``, one contiguous row per
input, so every layer is one wide matrix product ``W^T x`` (``(h_out, h_in) @ (h_in, n)``) and
the biases broadcast along rows. On a 2-core CPU this measured about 1.6x faster for the MLP
alone than the row-major ``x @ W``, and the features themselves are cheaper to build as rows.
The weights are the module's own flax variables, read by the layer names the module declares
(:func:`declared_layers`: a missing or unexpected layer is an error); only the orientation of the
products differs, the values are the same up to float rounding.

Large tensors run in blocks of parameters (:func:`map_blocks`; block sizes are chosen in
:mod:`~lopt_cli.optimizers.cpu_tuning`): the ``(32, b)`` activations then stay in cache
instead of becoming tensor-sized temporaries.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def declared_layers(params: Mapping, names: Sequence[str], owner: str) -> Mapping:
    """``params`` (a module's ``variables["params"]``) after checking that it holds exactly the
    layers ``names`` that ``owner`` declares: a renamed, missing or extra layer raises
    ``ValueError`` naming it, and never silently changes the network that runs."""
    expected, present = set(names), set(params)
    if expected != present:
        raise ValueError(f"{owner}: theta's layers {sorted(present)} differ from the declared "
                         f"{sorted(expected)} (missing {sorted(expected - present)}, "
                         f"unexpected {sorted(present - expected)})")
    return params


def first_layer(kernel: jax.Array, bias: jax.Array, scales: jax.Array, x: jax.Array) -> jax.Array:
    r"""``(kernel * scales[:, None])^T x + bias[:, None]``: a ``Dense`` on normalised features.

    ``x`` is the raw ``(F, n)`` feature block, ``scales`` ``(F,)`` the per-feature normalisers,
    folded into the kernel rows (``F x h`` multiplies instead of ``F x n``), and ``bias``
    ``(h,)`` may already include a per-tensor term.
    """
    return (kernel * scales[:, None]).T @ x + bias[:, None]


def split_input_layer(param_in: dict, tensor_in: dict, x: jax.Array, scales: jax.Array,
                      tensor_x: jax.Array) -> jax.Array:
    """The per-parameter MLPs' split first layer, feature-major: ``Dense`` ``param_in`` on the
    raw features ``x`` ``(F_p, b)`` normalised by ``scales``, plus the bias-free ``tensor_in``
    on the per-tensor features ``tensor_x`` (one bias for the whole block): ``(h, b)``."""
    bias = param_in["bias"] + tensor_x @ tensor_in["kernel"]
    return first_layer(param_in["kernel"], bias, scales, x)


def concat_dense(layers: list[dict]) -> dict:
    """Several flax ``Dense`` layers that read the same input, as one layer: kernels and biases
    concatenated along the output axis (one product instead of one per layer)."""
    return {name: jnp.concatenate([layer[name] for layer in layers], axis=-1)
            for name in ("kernel", "bias")}


def dense(layer: dict, h: jax.Array) -> jax.Array:
    """A flax ``Dense`` layer's variables ``{"kernel": (i, o), "bias": (o,)}`` applied to a
    feature-major ``(i, n)`` block: ``(o, n)``."""
    return layer["kernel"].T @ h + layer["bias"][:, None]


def hidden_stack(layers: list[dict], h: jax.Array) -> jax.Array:
    """``relu`` then :func:`dense` for each layer in turn (the MLP after its first layer, up to
    and excluding the output layer's own relu-free result)."""
    for layer in layers:
        h = dense(layer, nn.relu(h))
    return h


def map_blocks(fn, tensors: Any, chunk: int) -> jax.Array:
    """``fn(tensors) -> (n,)`` for a pytree of arrays sharing a trailing axis of ``n``
    parameters, in blocks of at most ``chunk`` parameters.

    The ``k = ceil(n / chunk)`` blocks have equal size ``b = ceil(n / k)`` and are visited by a
    ``lax.scan`` that slices the inputs in place and writes each block's result into one output
    buffer; the last block is shifted back to end at ``n`` (overlapping its predecessor by fewer
    than ``k`` parameters, which it rewrites with the same values), so nothing is padded or
    copied. ``chunk <= 0`` or ``n <= 2 * chunk`` applies ``fn`` once. Differentiable and
    vmappable.
    """
    return map_blocks_with_sum(lambda c: (fn(c), jnp.zeros((0, _width(c)))), tensors, chunk)[0]


def map_blocks_with_sum(fn, tensors: Any, chunk: int) -> tuple[jax.Array, jax.Array]:
    """Like :func:`map_blocks` for ``fn(tensors) -> (out (b,), extra (k, b))``: returns ``out``
    for all ``n`` parameters and ``extra`` summed over them, each parameter counted once (the
    ones that the shifted last block rewrites are masked out of its sum)."""
    n = _width(tensors)
    if chunk <= 0 or n <= 2 * chunk:
        out, extra = fn(tensors)
        return out, jnp.sum(extra, axis=-1)
    num_blocks = -(-n // chunk)
    size = -(-n // num_blocks)
    out_type, extra_type = jax.eval_shape(fn, jax.tree.map(lambda a: a[..., :size], tensors))

    def block(carry, i):
        out, total = carry
        start = jnp.minimum(i * size, n - size)
        part, extra = fn(jax.tree.map(
            lambda a: jax.lax.dynamic_slice_in_dim(a, start, size, a.ndim - 1), tensors))
        fresh = (start + jnp.arange(size) >= i * size).astype(extra.dtype)
        total = total + extra @ fresh
        return (jax.lax.dynamic_update_slice_in_dim(out, part, start, 0), total), None

    init = (jnp.zeros((n,), out_type.dtype), jnp.zeros(extra_type.shape[:-1], extra_type.dtype))
    (out, total), _ = jax.lax.scan(block, init, jnp.arange(num_blocks))
    return out, total


def _width(tensors: Any) -> int:
    return jax.tree.leaves(tensors)[0].shape[-1]
