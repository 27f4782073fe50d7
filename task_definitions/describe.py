"""Human-readable descriptions of families and sampled tasks (for ``lopt tasks``)."""
from __future__ import annotations

import dataclasses
import math

import jax

from task_definitions.base import config_to_dict


def family_ranges(family) -> dict:
    """The sampled ranges of a family: its dataclass fields other than ``name``."""
    if hasattr(family, "families") and hasattr(family, "weights"):  # a mixture
        return {name: f"weight {weight:g}"
                for (name, _), weight in zip(family.families, family.weights)}
    return {f.name: getattr(family, f.name) for f in dataclasses.fields(family)
            if f.name != "name"}


def parameter_count(task) -> int:
    """Number of scalar parameters of ``task`` (computed from shapes, nothing is run)."""
    shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))


def describe_task(family, task_id: int) -> dict:
    """Task ``task_id`` of ``family``: its config and its parameter count."""
    config = family.sample(jax.random.PRNGKey(task_id))
    task = family.build(config)
    return {"task_id": task_id, **config_to_dict(config, getattr(family, "name", None)),
            "num_parameters": parameter_count(task)}
