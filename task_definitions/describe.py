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


# Fields every ``lopt tasks action=describe`` row shows in its own column (header, record key).
COMMON_COLUMNS = (("id", "task_id"), ("family", "family"), ("dataset", "dataset"),
                  ("params", "num_parameters"), ("batch", "batch_size"))
# Shorter names for family-specific fields in the compact column (others keep their own name).
SHORT_NAMES = {"hidden_sizes": "hidden", "hidden_size": "hidden", "activation": "act",
               "init_scale": "init", "condition_number": "cond", "num_layers": "layers",
               "num_heads": "heads", "embed_size": "embed", "kernel_size": "kernel",
               "data_scale": "scale", "image_size": "image", "mlp_ratio": "mlp"}
HIDDEN_FIELDS = ("seed",)  # in tasks.jsonl only


def compact_value(value) -> str:
    """A field value without spaces: floats to 3 significant digits, sequences comma-joined."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ",".join(compact_value(v) for v in value) or "-"
    return str(value).replace(" ", "")


def task_row(record: dict) -> list[str]:
    """One table row of a ``describe_task`` record: the common columns, then every other field
    (but the seed) as ``key=value`` pairs, e.g. ``hidden=64,16 act=gelu init=0.735``."""
    common = [compact_value(record[key]) if key in record else "-" for _, key in COMMON_COLUMNS]
    skip = {key for _, key in COMMON_COLUMNS} | set(HIDDEN_FIELDS)
    specific = " ".join(f"{name}={compact_value(value)}" for name, value in
                        _short_items({k: v for k, v in record.items() if k not in skip}))
    return [*common, specific]


def _short_items(fields: dict, prefix: str = ""):
    """``(short name, value)`` pairs, nested dicts flattened as ``outer.inner``."""
    for key, value in fields.items():
        name = prefix + SHORT_NAMES.get(key, key)
        if isinstance(value, dict):
            yield from _short_items({k: v for k, v in value.items() if k not in HIDDEN_FIELDS},
                                    name + ".")
        else:
            yield name, value
