r"""Feature-major evaluation of a per-parameter MLP, in blocks of parameters.

The per-parameter learned optimizers (:mod:`~lopt_cli.optimizers.mlp_lopt`,
:mod:`~lopt_cli.optimizers.hierarchical`) apply one small MLP to every entry of a tensor. They
lay the inputs out *feature-major*: ``x`` is ``(F, n)``, one contiguous row per input, so every
layer is one wide matrix product ``W^T x`` (``(h_out, h_in) @ (h_in, n)``) and the biases
broadcast along rows. On a 2-core CPU this measured about 1.6x faster for the MLP alone than the
row-major ``x @ W`` of flax's ``Dense`` (``(n, F)`` inputs), and the features themselves are
cheaper to build as rows. The weights are the flax variables of the optimizer's network: only
the orientation of the products differs, the values are the same up to float rounding.

Large tensors run in blocks of columns (:func:`map_columns`): the ``(32, b)`` activations then
stay in cache instead of becoming tensor-sized temporaries.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

CPU_CHUNK_COLUMNS = 32768  # parameters per MLP block on CPU (measured best of 8k-64k)
# A vmapped population (meta-training) sums its particles' blocks: one block of every particle
# is one product. Measured on 2 CPU cores, 2 devices, 8 particles of 2410 parameters each
# (benchmarks.meta_training_speed): blocks of 512 columns per particle ran 5-12% faster than
# whole tensors, 256 and 1000 less so, 128 slower (loop overhead).
CPU_POPULATION_COLUMNS_PER_CORE = 4096
MIN_CHUNK_COLUMNS = 256


def population_chunk_size(particles_per_device: int, cores_per_device: int) -> int:
    """Parameters per MLP block for each of ``particles_per_device`` vmapped optimizers sharing
    ``cores_per_device`` CPU cores: ``CPU_POPULATION_COLUMNS_PER_CORE`` columns per core over
    the whole population, so one layer's ``(32, columns)`` activations stay in a core's cache
    (at least ``MIN_CHUNK_COLUMNS``)."""
    columns = CPU_POPULATION_COLUMNS_PER_CORE * max(1, cores_per_device)
    return max(MIN_CHUNK_COLUMNS, columns // max(1, particles_per_device))


def first_layer(kernel: jax.Array, bias: jax.Array, scales: jax.Array, x: jax.Array) -> jax.Array:
    r"""``(kernel * scales[:, None])^T x + bias[:, None]``: a ``Dense`` on normalised features.

    ``x`` is the raw ``(F, n)`` feature block, ``scales`` ``(F,)`` the per-feature normalisers,
    folded into the kernel rows (``F x h`` multiplies instead of ``F x n``), and ``bias``
    ``(h,)`` may already include a per-tensor term.
    """
    return (kernel * scales[:, None]).T @ x + bias[:, None]


def input_layer(params: dict, x: jax.Array, scales: jax.Array, tensor_x: jax.Array) -> jax.Array:
    """The per-parameter MLPs' split first layer, feature-major: ``Dense`` ``param_in`` on the
    raw features ``x`` ``(F_p, b)`` normalised by ``scales``, plus the bias-free ``tensor_in``
    on the per-tensor features ``tensor_x`` (one bias for the whole block): ``(h, b)``."""
    first = params["param_in"]
    bias = first["bias"] + tensor_x @ params["tensor_in"]["kernel"]
    return first_layer(first["kernel"], bias, scales, x)


def numbered_layers(params: dict, prefix: str, start: int) -> list[dict]:
    """The variables of flax layers ``<prefix><start>``, ``<prefix><start + 1>``, … in order."""
    layers = []
    while f"{prefix}{start + len(layers)}" in params:
        layers.append(params[f"{prefix}{start + len(layers)}"])
    return layers


def concat_dense(layers: list[dict]) -> dict:
    """Several flax ``Dense`` layers that read the same input, as one layer: kernels and biases
    concatenated along the output axis (one product instead of one per layer)."""
    return {name: jnp.concatenate([layer[name] for layer in layers], axis=-1)
            for name in ("kernel", "bias")}


def has_chunk_size(lopt: Any) -> bool:
    """Whether ``lopt`` is a dataclass with a ``chunk_size`` field (runs its MLP in blocks)."""
    return dataclasses.is_dataclass(lopt) and "chunk_size" in {
        field.name for field in dataclasses.fields(lopt)}


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


def map_columns(fn, columns: Any, chunk: int) -> jax.Array:
    """``fn(columns) -> (n,)`` for a pytree of arrays sharing a trailing axis ``n``, in blocks
    of at most ``chunk`` columns.

    The ``k = ceil(n / chunk)`` blocks have equal size ``b = ceil(n / k)`` and are visited by a
    ``lax.scan`` that slices the inputs in place and writes each block's result into one output
    buffer; the last block is shifted back to end at ``n`` (overlapping its predecessor by fewer
    than ``k`` columns, which it rewrites with the same values), so nothing is padded or copied.
    ``chunk <= 0`` or ``n <= 2 * chunk`` applies ``fn`` once. Differentiable and vmappable.
    """
    return map_columns_with_sum(lambda c: (fn(c), jnp.zeros((0, _width(c)))), columns, chunk)[0]


def map_columns_with_sum(fn, columns: Any, chunk: int) -> tuple[jax.Array, jax.Array]:
    """Like :func:`map_columns` for ``fn(columns) -> (out (b,), extra (k, b))``: returns ``out``
    for all ``n`` columns and ``extra`` summed over them, each column counted once (the columns
    that the shifted last block rewrites are masked out of its sum)."""
    n = _width(columns)
    if chunk <= 0 or n <= 2 * chunk:
        out, extra = fn(columns)
        return out, jnp.sum(extra, axis=-1)
    num_blocks = -(-n // chunk)
    size = -(-n // num_blocks)
    out_type, extra_type = jax.eval_shape(fn, jax.tree.map(lambda a: a[..., :size], columns))

    def block(carry, i):
        out, total = carry
        start = jnp.minimum(i * size, n - size)
        part, extra = fn(jax.tree.map(
            lambda a: jax.lax.dynamic_slice_in_dim(a, start, size, a.ndim - 1), columns))
        fresh = (start + jnp.arange(size) >= i * size).astype(extra.dtype)
        total = total + extra @ fresh
        return (jax.lax.dynamic_update_slice_in_dim(out, part, start, 0), total), None

    init = (jnp.zeros((n,), out_type.dtype), jnp.zeros(extra_type.shape[:-1], extra_type.dtype))
    (out, total), _ = jax.lax.scan(block, init, jnp.arange(num_blocks))
    return out, total


def _width(columns: Any) -> int:
    return jax.tree.leaves(columns)[0].shape[-1]
