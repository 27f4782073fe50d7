"""Multi-host meta-training through ``jax.distributed`` (multi-controller SPMD).

Every process runs the same ``lopt meta-train`` command with its own ``process_id``. After
:func:`initialize`, ``jax.devices()`` lists every process's devices; the ``("tasks",)`` mesh of
:class:`lopt_cli.meta.sharding.Placement` then spans all of them. All processes draw the same
population from the seed (population draws and keys are deterministic), each process places
only the rows of its own devices (:func:`to_global`), and the jitted estimate and outer update
run as one SPMD program whose meta-gradient mean is an all-reduce across processes. So every
process holds the same meta-parameters; only process 0 (:func:`is_main`) writes files.

On CPU the cross-process collectives are gloo's (``jax_cpu_collectives_implementation``); on
GPU/TPU the backend's own. Settings come from ``compute.distributed`` and may be overridden
by the environment (how a cluster launcher passes them)::

    LOPT_COORDINATOR=host0:12345 LOPT_NUM_PROCESSES=2 LOPT_PROCESS_ID=0 lopt meta-train ...
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

ENV_VARS = {"coordinator_address": "LOPT_COORDINATOR", "num_processes": "LOPT_NUM_PROCESSES",
            "process_id": "LOPT_PROCESS_ID"}


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """Where this process stands in a multi-process run (one process: nothing to do)."""

    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0
    initialization_timeout: int = 300  # seconds to wait for every process to join

    @property
    def enabled(self) -> bool:
        return self.num_processes > 1


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{key}={value!r}: expected an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r}: expected an integer") from None


def resolve_settings(node: Mapping | None,
                     environ: Mapping[str, str] = os.environ) -> DistributedSettings:
    """``compute.distributed`` (a mapping or None) with the ``LOPT_*`` variables over it.

    Raises ``ValueError`` (naming the key) for inconsistent values.
    """
    values = dict(node or {})
    for key, var in ENV_VARS.items():
        if environ.get(var):
            values[key] = environ[var]
    num = _int(values.get("num_processes", 1), "num_processes")
    pid = _int(values.get("process_id", 0), "process_id")
    timeout = _int(values.get("initialization_timeout", 300), "initialization_timeout")
    address = values.get("coordinator_address") or None
    if num < 1:
        raise ValueError(f"num_processes={num}: expected an integer >= 1")
    if not 0 <= pid < num:
        raise ValueError(f"process_id={pid}: expected 0 <= process_id < num_processes={num}")
    if num > 1 and not address:
        raise ValueError(f"coordinator_address=null with num_processes={num}: give host:port "
                         f"of process 0 (or {ENV_VARS['coordinator_address']})")
    return DistributedSettings(None if address is None else str(address), num, pid, timeout)


def is_initialized() -> bool:
    try:
        from jax._src import distributed

        return distributed.global_state.client is not None
    except (ImportError, AttributeError):  # a private helper; assume not
        return False


def initialize(coordinator_address: str | None, num_processes: int, process_id: int,
               initialization_timeout: int = 300) -> None:
    """Joins the ``num_processes``-process run (no-op for one process or when already joined).

    Must run before anything touches a JAX backend. On CPU, cross-process collectives use gloo.
    """
    if num_processes <= 1 or is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=initialization_timeout)


def initialize_from(settings: DistributedSettings) -> None:
    initialize(settings.coordinator_address, settings.num_processes, settings.process_id,
               settings.initialization_timeout)


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_main() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def global_devices(per_process: int) -> list:
    """The first ``per_process`` local devices of every process, in process order."""
    by_process: dict[int, list] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    chosen = []
    for index in sorted(by_process):
        devices = sorted(by_process[index], key=lambda d: d.id)
        if len(devices) < per_process:
            raise ValueError(f"process {index} has {len(devices)} device(s), not {per_process}")
        chosen += devices[:per_process]
    return chosen


def to_global(value: Any, sharding) -> jax.Array:
    """``value`` (the same on every process) as a global array with ``sharding``: each
    process copies only the rows of its own devices. Global arrays are resharded in place."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return value if value.sharding == sharding else jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree: Any) -> Any:
    """Every leaf as a whole numpy array on every process (a collective: all must call it)."""
    from jax.experimental import multihost_utils

    def gather(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(gather, tree)


def digest(tree: Any) -> str:
    """SHA-256 of a pytree's leaves (dtype, shape and bytes), to compare processes' results."""
    sha = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(to_host(tree)):
        leaf = np.ascontiguousarray(leaf)
        sha.update(f"{leaf.dtype}{leaf.shape}".encode())
        sha.update(leaf.tobytes())
    return sha.hexdigest()


def digest_line(theta: Any) -> str:
    """``process i/n: theta sha256 <hex>``: what each process prints at the end of a run."""
    return f"process {jax.process_index()}/{jax.process_count()}: theta sha256 {digest(theta)}"


class QuietRecorder:
    """The meta-training recorder of a process other than 0: keeps rows, writes nothing."""

    def __init__(self, history: list[dict] | None = None):
        self.history = list(history or [])

    def __enter__(self) -> QuietRecorder:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, step: int, metrics: dict, theta: Any) -> None:
        self.history.append({"step": step, **metrics})

    def checkpoint(self, state: Any) -> None:
        pass
