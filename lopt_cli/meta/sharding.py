"""Spreading the task population over the local devices.

The population is data-parallel: members are independent until the meta-gradient averages over
them. With ``n`` devices, a 1-D mesh ``("tasks",)`` holds the stacked tasks and the estimator's
per-member states split along their leading (member) axis, and the meta-parameters and outer
optimizer state replicated. The estimators' jitted ``estimate`` then runs as one SPMD program:
XLA partitions the vmapped unrolls and inserts the all-reduce of the meta-gradient mean. No
estimator code changes; with one device nothing is moved at all.

Example (2 CPU "devices": ``XLA_FLAGS=--xla_force_host_platform_device_count=2``)::

    placement = Placement.create(2)
    tasks, states = placement.shard(tasks), placement.shard(states)
    theta = placement.replicate(theta)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lopt_cli.meta.cpu_tuning import prefer_wide_vectors, request_cpu_devices

AXIS = "tasks"


def resolve_num_devices(requested: int | str, num_tasks: int | None = None) -> int:
    """``compute.num_devices`` as a count: an int, or ``auto``.

    ``auto`` on accelerators is every local device. On a CPU-only machine it is one XLA host
    device per core, reduced to the largest count that divides ``num_tasks`` (when given): the
    population is then split over the cores as independent single-device programs, which on 2
    cores measured about 1.25x the throughput of one device using both cores for each op
    (``make bench``, meta-training benchmark).

    Raises ``ValueError`` (naming what is available) for more devices than are visible.
    """
    if requested == "auto":
        request_cpu_devices(os.cpu_count() or 1)
        available = jax.local_device_count()
        if jax.default_backend() != "cpu" or not num_tasks:
            return available
        return largest_divisor_at_most(num_tasks, available)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
        raise ValueError(f"{requested!r}: expected a positive integer or 'auto'")
    if requested == 1:
        prefer_wide_vectors()
        return 1
    request_cpu_devices(requested)
    available = jax.local_device_count()
    if requested > available:
        platform = jax.default_backend()
        raise ValueError(
            f"{requested}: only {available} local {platform} device(s); use at most {available} "
            "or 'auto' (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N adds devices)")
    return requested


def largest_divisor_at_most(count: int, limit: int) -> int:
    """The largest ``n <= limit`` that divides ``count`` (1 at least)."""
    return max(n for n in range(1, max(1, limit) + 1) if count % n == 0)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the population lives: ``mesh`` is None for a single device (nothing is moved)."""

    mesh: Any = None

    @classmethod
    def create(cls, num_devices: int) -> Placement:
        """A 1-D ``("tasks",)`` mesh over the first ``num_devices`` local devices (of every
        process, in process order, in a multi-process run: :mod:`lopt_cli.meta.distributed`)."""
        if jax.process_count() > 1:
            from lopt_cli.meta.distributed import global_devices

            devices = np.array(global_devices(num_devices))
            return cls(Mesh(devices, (AXIS,), axis_types=(jax.sharding.AxisType.Auto,)))
        if num_devices <= 1:
            return cls(None)
        mesh = jax.make_mesh((num_devices,), (AXIS,),
                             axis_types=(jax.sharding.AxisType.Auto,),
                             devices=jax.local_devices()[:num_devices])
        return cls(mesh)

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def shard(self, tree: Any) -> Any:
        """Every leaf split along its leading (member) axis over the mesh."""
        if self.mesh is None:
            return tree
        split = NamedSharding(self.mesh, PartitionSpec(AXIS))
        whole = NamedSharding(self.mesh, PartitionSpec())
        return jax.tree_util.tree_map(
            lambda x: self._put(x, split if jax.numpy.ndim(x) else whole), tree)

    def replicate(self, tree: Any) -> Any:
        """Every leaf copied to every device of the mesh."""
        if self.mesh is None:
            return tree
        whole = NamedSharding(self.mesh, PartitionSpec())
        return jax.tree_util.tree_map(lambda x: self._put(x, whole), tree)

    @property
    def is_global(self) -> bool:
        """Whether the mesh spans other processes' devices."""
        return self.mesh is not None and not NamedSharding(self.mesh, PartitionSpec()) \
            .is_fully_addressable

    def _put(self, x: Any, sharding: NamedSharding) -> Any:
        if self.is_global:
            from lopt_cli.meta.distributed import to_global

            return to_global(x, sharding)
        return jax.device_put(x, sharding)
