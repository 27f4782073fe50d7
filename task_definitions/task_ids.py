"""Task ids: how an id becomes a task, and the id ranges every command reserves (defined once).

Task ``i`` of a family is ``family.sample(task_key(i))``: the same task on every machine. The
ranges keep the tasks each use draws apart:

==========  ==============  ===============================================================
range       first id        used by
==========  ==============  ===============================================================
seen        0               meta-training's sampled tasks (``tasks.first_id``), seen split
unseen      1,000,000       the held-out check and ``lopt evaluate``'s unseen split
tuning      2,000,000       ``lopt evaluate``'s global tuning of the baselines
opt_list    3,000,000       the tuning runs that learn the shipped opt_list
==========  ==============  ===============================================================

The configs read them through the ``lopt_task_ids`` resolver (``${lopt_task_ids:unseen}``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import jax

TASK_ID_RANGES: dict[str, int] = {
    "seen": 0,
    "unseen": 1_000_000,
    "tuning": 2_000_000,
    "opt_list": 3_000_000,
}
SEEN_FIRST_ID = TASK_ID_RANGES["seen"]
UNSEEN_FIRST_ID = TASK_ID_RANGES["unseen"]
TUNING_FIRST_ID = TASK_ID_RANGES["tuning"]
OPT_LIST_FIRST_ID = TASK_ID_RANGES["opt_list"]


def task_key(task_id: int) -> jax.Array:
    """The key that samples task ``task_id`` of a family: the same task on every machine."""
    import jax  # here, so that the configs' resolver of the id ranges stays cheap to import

    return jax.random.PRNGKey(task_id)


def seed_keys(seed: int, num_seeds: int, task_index: int | None = None) -> jax.Array:
    """The per-seed keys (initialisation, data order) of a run: the same for every optimizer
    and trial. With ``task_index`` they are that task's own, so two tasks whose configs differ
    only in a seed their family does not use when it builds are not the same run twice."""
    import jax

    base = jax.random.PRNGKey(seed)
    if task_index is not None:
        base = jax.random.fold_in(base, task_index)
    return jax.random.split(base, num_seeds)


def first_task_id(range_name: str) -> int:
    """The first id of the reserved range ``range_name`` (a ValueError names the ranges)."""
    if range_name not in TASK_ID_RANGES:
        raise ValueError(f"task id range {range_name!r}: expected one of {list(TASK_ID_RANGES)}")
    return TASK_ID_RANGES[range_name]
