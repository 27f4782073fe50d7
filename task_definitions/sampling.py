"""Deterministic sampling helpers shared by task families.

A family's ``sample(key)`` must give the same config for the same key on every machine. We turn
the JAX key into a NumPy generator once, so that sampling a thousand configs costs milliseconds
rather than a thousand device dispatches.
"""
from __future__ import annotations

import math

import jax
import numpy as np


def generator_from_key(key: jax.Array | int, *salt: int) -> np.random.Generator:
    """A NumPy generator determined by a JAX PRNG key (typed or raw) or an integer seed.

    Non-negative ``salt`` integers select further streams of the same key, independent of the
    plain one (which stays what it always was)."""
    if isinstance(key, (int, np.integer)):
        entropy = int(key)
    else:
        data = (jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                else key)
        entropy = np.asarray(data, dtype=np.uint32).ravel().tolist()
    if salt:
        entropy = [*np.atleast_1d(entropy).tolist(), *map(int, salt)]
    return np.random.default_rng(entropy)


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A float drawn log-uniformly from ``[low, high]``."""
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def choice(rng: np.random.Generator, options) -> object:
    """One element of ``options`` (a sequence), drawn uniformly, returned as a plain Python value."""
    value = options[int(rng.integers(len(options)))]
    return tuple(value) if isinstance(value, list) else value


def task_seed(rng: np.random.Generator) -> int:
    """A 31-bit seed for the task's own randomness (bowl, data order, initialisation)."""
    return int(rng.integers(2**31 - 1))
