"""Human-readable descriptions of families and sampled tasks (for ``lopt tasks``)."""
from __future__ import annotations

import dataclasses
import math

import jax

from task_definitions.base import config_to_dict


def family_ranges(family) -> dict:
    """The sampled ranges of a family: its dataclass fields other than ``name`` (a wrapped
    family's as ``family.<field>``)."""
    if hasattr(family, "families") and hasattr(family, "weights"):  # a mixture
        return {name: f"weight {weight:g}"
                for (name, _), weight in zip(family.families, family.weights)}
    ranges = {}
    for field in dataclasses.fields(family):
        value = getattr(family, field.name)
        if hasattr(value, "sample") and hasattr(value, "build"):  # a wrapped family
            ranges.update({f"{field.name}.{k}": v for k, v in family_ranges(value).items()})
        elif field.name != "name":
            ranges[field.name] = value
    return ranges


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


def find_field(record: dict, key: str):
    """``record[key]``, else the first ``key`` of a nested dict (a wrapped task's inner config,
    e.g. the dataset of a reparameterised MLP), else ``None``."""
    if key in record:
        return record[key]
    for value in record.values():
        if isinstance(value, dict) and (found := find_field(value, key)) is not None:
            return found
    return None


def task_row(record: dict) -> list[str]:
    """One table row of a ``describe_task`` record: the common columns, then every other field
    (but the seed) as ``key=value`` pairs, e.g. ``hidden=64,16 act=gelu init=0.735``."""
    found = {key: find_field(record, key) for _, key in COMMON_COLUMNS}
    common = ["-" if found[key] is None else compact_value(found[key])
              for _, key in COMMON_COLUMNS]
    shown = {key for key, value in found.items() if value is not None}
    specific = " ".join(f"{name}={compact_value(value)}" for name, value in
                        _short_items(record, skip=shown | set(HIDDEN_FIELDS)))
    return [*common, specific]


def _short_items(fields: dict, prefix: str = "", skip: set = frozenset()):
    """``(short name, value)`` pairs but those of ``skip`` (at any depth), nested dicts
    flattened as ``outer.inner``."""
    for key, value in fields.items():
        if key in skip:
            continue
        name = prefix + SHORT_NAMES.get(key, key)
        if isinstance(value, dict):
            yield from _short_items(value, name + ".", skip)
        else:
            yield name, value
