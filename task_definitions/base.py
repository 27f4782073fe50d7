"""The task contract: a training problem as a pytree of pure, jittable functions.

A :class:`Task` is a ``flax.struct`` dataclass. Its array fields (datasets, the matrix of a
quadratic bowl, a sampled initialiser scale, ...) are pytree *leaves*; its shape-determining
fields are *static*. Hence a jitted unroll takes the task as an ordinary argument, compiles once
per task shape, and tasks of one shape stack into a batch that ``jax.vmap`` runs together.

Every task provides
  * ``init(key) -> params``                 a pytree of parameters,
  * ``loss(params, batch, key) -> scalar``   the training objective,
  * ``sample_batch(key, split) -> batch``    a batch of ``train``, ``valid`` or ``test`` data,
  * ``normalize(loss) -> scalar``            a loss comparable across tasks (for averaging).

A :class:`TaskFamily` samples hashable, serialisable configs and builds tasks from them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

Params = Any
Batch = Any
SPLITS = ("train", "valid", "test")


class Task(Protocol):
    """What every task offers (see module docstring)."""

    def init(self, key: jax.Array) -> Params: ...

    def loss(self, params: Params, batch: Batch, key: jax.Array) -> jax.Array: ...

    def sample_batch(self, key: jax.Array, split: str) -> Batch: ...

    def normalize(self, loss: jax.Array) -> jax.Array: ...


@runtime_checkable
class TaskFamily(Protocol):
    """A distribution over tasks: ``sample`` a config, ``build`` a task from it."""

    name: str

    def sample(self, key: jax.Array) -> Any: ...

    def build(self, config: Any) -> Task: ...


def sample_from_arrays(key: jax.Array, arrays: dict, batch_size: int) -> dict:
    """Draws ``batch_size`` rows (with replacement) from every array of ``arrays``.

    Row ``i`` is ``u_i mod num_rows`` for uniform 32-bit ``u_i``: one threefry pass (against
    three for ``jax.random.randint``, which this runs every inner step); the modulo bias
    (no row more likely than another by over ``num_rows / 2^32``) is far below sampling noise.
    """
    num_rows = next(iter(arrays.values())).shape[0]
    index = jax.random.bits(key, (batch_size,), jnp.uint32) % jnp.uint32(num_rows)
    return {name: value.at[index].get(mode="promise_in_bounds") for name, value in arrays.items()}


def normalize_by_ceiling(loss: jax.Array, scale: jax.Array | float, ceiling: float) -> jax.Array:
    """``loss / scale``, clipped to ``[0, ceiling]``; non-finite values map to the ceiling."""
    value = loss / scale
    return jnp.where(jnp.isfinite(value), jnp.clip(value, 0.0, ceiling), ceiling)


def config_to_dict(config: Any, family_name: str | None = None) -> dict:
    """A task config as a plain, JSON-serialisable dict, ``family`` first.

    ``family_name`` is the sampling family's ``name``; a suite member names its own family.
    """
    if hasattr(config, "config") and hasattr(config, "family"):  # a suite member
        return config_to_dict(config.config, config.family)
    name = family_name or type(config).__name__.removesuffix("Config").lower()
    return {"family": name, **dataclasses.asdict(config)}


def with_seed(config: Any, seed: int) -> Any:
    """``config`` with its per-task seed replaced (shapes unchanged)."""
    if hasattr(config, "with_seed"):
        return config.with_seed(seed)
    return dataclasses.replace(config, seed=seed)


def shape_signature(task: Task) -> tuple:
    """Hashable key: tasks with equal signatures can be stacked and vmapped together."""
    leaves, treedef = jax.tree_util.tree_flatten(task)
    return treedef, tuple((leaf.shape, jnp.asarray(leaf).dtype) for leaf in leaves)


def stack_tasks(tasks: list[Task]) -> Task:
    """Stacks tasks of one shape signature into one batched task (leading axis = task)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *tasks)


@dataclasses.dataclass(frozen=True)
class SingleTaskConfig:
    """The config of a one-task family: only the per-task seed."""

    seed: int = 0


@dataclasses.dataclass(frozen=True)
class SingleTaskFamily:
    """Wraps one user-defined :class:`Task` as a family whose every sample is that task."""

    task: Any
    name: str = "user_task"

    def sample(self, key: jax.Array) -> SingleTaskConfig:
        from task_definitions.sampling import generator_from_key, task_seed

        return SingleTaskConfig(seed=task_seed(generator_from_key(key)))

    def build(self, config: SingleTaskConfig) -> Any:
        del config
        return self.task


def as_family(obj: Any) -> TaskFamily:
    """A task family from a family (returned as is) or a single task (wrapped)."""
    if hasattr(obj, "sample") and hasattr(obj, "build"):
        return obj
    if all(hasattr(obj, name) for name in ("init", "loss", "sample_batch", "normalize")):
        return SingleTaskFamily(obj, name=getattr(obj, "name", type(obj).__name__))
    raise TypeError(f"{type(obj).__name__} is neither a TaskFamily (sample, build) nor a Task "
                    "(init, loss, sample_batch, normalize)")
