r"""Every CPU-specific speed choice of the learned optimizers, in one place.

Nothing here changes the maths: each rule picks a block size, or an equal way of writing the
same expression that XLA's CPU backend runs faster. The optimizers
(:mod:`~lopt_cli.optimizers.per_tensor`, :mod:`~lopt_cli.optimizers.features`) import these;
the meta-trainer imports :func:`population_chunk_size` to size the blocks of a vmapped
population (:func:`lopt_cli.meta.cpu_tuning.for_population`).

**Blocks of parameters.** The per-parameter MLPs evaluate a tensor feature-major
(:mod:`~lopt_cli.optimizers.feature_major`); a tensor of more than twice ``chunk_size``
parameters runs in blocks of at most ``chunk_size`` so that one layer's ``(32, b)``
activations stay in cache (:func:`~lopt_cli.optimizers.feature_major.map_blocks`).

**Rewrites.** :func:`inverse_sqrt` (``sqrt(1/x)`` for ``rsqrt``) and :func:`stack_rows`
(row copies for ``concatenate``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

CPU_CHUNK_SIZE = 32768  # parameters per MLP block on CPU (measured best of 8k-64k)
# A vmapped population (meta-training) sums its particles' blocks: one block of every particle
# is one product. Measured on 2 CPU cores, 2 devices, 8 particles of 2410 parameters each
# (benchmarks.meta_training_speed): blocks of 512 parameters per particle ran 5-12% faster than
# whole tensors, 256 and 1000 less so, 128 slower (loop overhead).
CPU_POPULATION_PARAMS_PER_CORE = 4096
MIN_CHUNK_SIZE = 256


def default_chunk_size() -> int:
    """Parameters per MLP block when the optimizer leaves ``chunk_size`` unset:
    ``CPU_CHUNK_SIZE`` on CPU, ``0`` (one block per tensor) on accelerators."""
    return CPU_CHUNK_SIZE if jax.default_backend() == "cpu" else 0


def resolve_chunk_size(chunk_size: int | None) -> int:
    """``chunk_size`` as configured, or :func:`default_chunk_size` when ``None``."""
    return default_chunk_size() if chunk_size is None else int(chunk_size)


def population_chunk_size(particles_per_device: int, cores_per_device: int) -> int:
    """Parameters per MLP block for each of ``particles_per_device`` vmapped optimizers sharing
    ``cores_per_device`` CPU cores: ``CPU_POPULATION_PARAMS_PER_CORE`` parameters per core over
    the whole population, so one layer's ``(32, b)`` activations stay in a core's cache
    (at least ``MIN_CHUNK_SIZE``)."""
    budget = CPU_POPULATION_PARAMS_PER_CORE * max(1, cores_per_device)
    return max(MIN_CHUNK_SIZE, budget // max(1, particles_per_device))


def has_chunk_size(lopt: Any) -> bool:
    """Whether ``lopt`` is a dataclass with a ``chunk_size`` field (runs its MLP in blocks)."""
    return dataclasses.is_dataclass(lopt) and "chunk_size" in {
        field.name for field in dataclasses.fields(lopt)}


def inverse_sqrt(x: jax.Array) -> jax.Array:
    r""":math:`1/\sqrt{x}` computed as ``sqrt(1/x)``.

    Same value as ``jax.lax.rsqrt`` (to float32 rounding, for the ``x >= eps > 0`` it is used on)
    but XLA on CPU vectorises it: on a ``(10^6, 5)`` array it measured 0.8 ms against 5.8 ms for
    ``rsqrt`` (or ``1 / sqrt(x)``, which XLA rewrites into ``rsqrt``).
    """
    return jnp.sqrt(1.0 / x)


def stack_rows(blocks: Sequence[jax.Array]) -> jax.Array:
    """Concatenates ``(k_i,) + S`` blocks along the leading axis into ``(sum k_i,) + S``.

    Writes each block into its rows of one buffer (``dynamic_update_slice``) rather than using
    ``jnp.concatenate``: XLA on CPU turns a concatenation into one loop that selects the source
    block per element, which measured several times slower than these in-place row copies.
    """
    out = jnp.empty((sum(b.shape[0] for b in blocks),) + blocks[0].shape[1:], blocks[0].dtype)
    row = 0
    for block in blocks:
        out = jax.lax.dynamic_update_slice_in_dim(out, block, row, 0)
        row += block.shape[0]
    return out
