"""Spreading an evaluation call's runs over the local devices (``lopt evaluate devices=...``).

Every trial × seed of an optimizer on a task is one vmapped call (a benchmark's
:func:`~lopt_cli.evaluation.measured_runs.trial_curves`, a suite baseline's
:func:`~lopt_cli.evaluation.runs.run_trials`). With ``n`` devices its runs are split along
the trials, the seeds, or padded trials (:func:`split_axis`) over a 1-D mesh: the inputs that
carry that axis are placed sharded, every other input is replicated, and XLA partitions the
vmapped program, the runs being independent. Nothing in the maths changes; a batched matrix
product of fewer runs may round differently, which a chaotic run (a step size at the edge of
stability) amplifies, as it does any rounding.

On a CPU-only machine ``lopt evaluate`` asks for one XLA host device per core before JAX starts
(in its ``check``). On 2 cores, 10 trials × 3 seeds of AdamLR on ``lopt_bench`` tasks took
1.2-1.9× less time split over two host devices than on one device using both cores for each
op (``python -m benchmarks.run benchmark_devices``; README, "Measured results").
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from lopt_cli.errors import LoptUserError

AXIS = "runs"


def resolve_devices(setting: Any) -> int:
    """``devices`` as a count: ``auto`` (every local device) or a positive int no
    larger than the local device count; a one-line error otherwise."""
    available = jax.local_device_count()
    if setting == "auto":
        return available
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise LoptUserError(f"devices={setting!r}: expected 'auto' or a positive integer")
    if setting > available:
        raise LoptUserError(f"devices={setting}: only {available} local "
                            f"{jax.default_backend()} device(s); use at most {available} or "
                            "'auto'")
    return setting


def num_trials_of(hparams: dict) -> int:
    """How many trials ``hparams`` holds (the length of its leaves' leading axis)."""
    return len(jax.tree_util.tree_leaves(hparams)[0])


def split_axis(num_trials: int, num_seeds: int, num_devices: int) -> tuple[str | None, int, int]:
    """How a call's runs are split over ``num_devices``: ``(axis, devices, trials)``. Along the
    trials if ``num_devices`` divides them; else along the seeds if it divides those; else, with
    more trials than devices, along the trials padded to a multiple of ``num_devices`` (copies
    of the last trial, whose runs are dropped); else not at all.

    >>> split_axis(10, 3, 2), split_axis(1, 4, 2), split_axis(5, 3, 2), split_axis(1, 3, 2)
    (('trial', 2, 10), ('seed', 2, 1), ('trial', 2, 6), (None, 1, 1))
    """
    if num_devices > 1:
        if num_trials % num_devices == 0:
            return "trial", num_devices, num_trials
        if num_seeds % num_devices == 0:
            return "seed", num_devices, num_trials
        if num_trials > num_devices:
            return "trial", num_devices, -(-num_trials // num_devices) * num_devices
    return None, 1, num_trials


def pad_trials(hparams: dict, count: int) -> dict:
    """``hparams`` with its last trial repeated up to ``count`` trials."""
    def pad(values):
        extra = count - len(values)
        return jnp.concatenate([values, jnp.repeat(values[-1:], extra, axis=0)]) if extra else values

    return jax.tree_util.tree_map(pad, hparams)


def without_padding(tree: Any, num_trials: int, trial_axis: int = 0) -> Any:
    """``tree``'s first ``num_trials`` trials along ``trial_axis``: the runs of the trials
    :func:`spread_runs` padded dropped."""
    index = (slice(None),) * trial_axis + (slice(num_trials),)
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def spread_runs(hparams: dict, keys: jax.Array, shared: Any,
                num_devices: int) -> tuple[dict, jax.Array, Any]:
    """``hparams`` (leading axis: trial), ``keys`` (leading axis: seed) and ``shared`` (the task,
    the fixed sample's keys: what every run reads) placed on a mesh of the first devices: the
    axis of :func:`split_axis` split (the trials padded if it says so; the caller drops the
    padding's runs with :func:`without_padding`), everything else replicated. Unchanged for one device."""
    num_trials = num_trials_of(hparams)
    axis, used, padded = split_axis(num_trials, len(keys), num_devices)
    if axis is None:
        return hparams, keys, shared
    mesh = jax.make_mesh((used,), (AXIS,), axis_types=(AxisType.Auto,),
                         devices=jax.local_devices()[:used])
    split, whole = NamedSharding(mesh, PartitionSpec(AXIS)), NamedSharding(mesh, PartitionSpec())
    hparams = pad_trials(hparams, padded)
    return (jax.device_put(hparams, split if axis == "trial" else whole),
            jax.device_put(keys, split if axis == "seed" else whole),
            jax.device_put(shared, whole))
