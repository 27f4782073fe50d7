"""A benchmark part stopped between two segments, kept on disk so the next run continues it.

A part (one optimizer's trials × seeds on one task, or a stacked group) runs in segments of
its horizon (:mod:`measured_runs`). Asked to stop (Ctrl-C, SIGTERM), ``lopt evaluate`` finishes
the segment in progress and writes a :class:`PartStore` file: the runs' state after it (the
inner states and their step keys) and the curves measured so far. The same command later
restores that state into the same compiled program and continues from the next segment, so
the finished part has the bytes of an uninterrupted one. On the host loop (one trial × seed
at a time) each finished trial × seed keeps its curves in its own file.

Files live under ``<cache>/partial/<part key>/`` and are removed once the part is cached.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import serialization

from lopt_cli.evaluation.cache import ABOUT_FILE
from lopt_cli.interrupt import RunStopped
from lopt_cli.io import write_bytes_atomic

STATE_FILE = "state.msgpack"
CURVES_FILE = "curves.msgpack"


class PartStore(NamedTuple):
    """Where one part's (or one host-loop run's) progress is kept, and when to stop."""

    directory: Path
    stop_requested: Callable[[], bool] = lambda: False

    def child(self, name: str) -> PartStore:
        """A store inside this one: a part's, or on the host loop a task's or one of its
        trial × seed runs'."""
        return self._replace(directory=self.directory / name)

    def finished_curves(self) -> dict | None:
        """The curves of a run that finished before the stop (host loop), else ``None``."""
        saved = _read(self.directory / CURVES_FILE)
        return None if saved is None else _as_arrays(saved)

    def keep_finished(self, curves: dict) -> None:
        write_bytes_atomic(self.directory / CURVES_FILE, serialization.msgpack_serialize(
            jax.tree_util.tree_map(np.asarray, curves)))

    def restore(self, template) -> tuple[int, Any, list[dict]] | None:
        """``(next segment, runs, curves so far)`` of a stopped part, the runs put where
        ``template``'s arrays are (same shapes, dtypes and devices), or ``None``."""
        saved = _read(self.directory / STATE_FILE)
        if saved is None:
            return None
        try:
            host = serialization.from_state_dict(jax.device_get(template), saved["runs"])
        except (KeyError, TypeError, ValueError):  # not this part's state: start it afresh
            return None
        shapes = [np.shape(x) == t.shape for t, x in zip(jax.tree_util.tree_leaves(template),
                                                          jax.tree_util.tree_leaves(host))]
        if not all(shapes):
            return None
        runs = jax.tree_util.tree_map(
            lambda t, x: jax.device_put(np.asarray(x, dtype=t.dtype), t.sharding), template, host)
        pieces = [_as_arrays(saved["pieces"][str(i)]) for i in range(len(saved["pieces"]))]
        return int(saved["next_segment"]), runs, pieces

    def stop_if_requested(self, next_segment: int, segments: int, runs, pieces: list[dict]
                          ) -> None:
        """After a segment: when a stop was asked for and segments remain, writes the state
        and raises :class:`RunStopped`."""
        if next_segment >= segments or not self.stop_requested():
            return
        state = {"next_segment": next_segment,
                 "runs": serialization.to_state_dict(jax.device_get(runs)),
                 "pieces": {str(i): piece for i, piece in enumerate(pieces)}}
        write_bytes_atomic(self.directory / STATE_FILE, serialization.msgpack_serialize(state))
        raise RunStopped(f"stopped after segment {next_segment} of {segments}")

    def describe(self, label: str, stopped: str) -> None:
        """Names the kept part (``about.json``: its label and where it stopped), for
        ``lopt cache``; restoring it never reads this."""
        write_bytes_atomic(self.directory / ABOUT_FILE, json.dumps(
            {"label": label, "stopped": stopped}).encode("utf-8"))

    def discard(self) -> None:
        """Removes the part's files (it is cached now)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _read(path: Path) -> dict | None:
    """A kept file's contents; ``None`` when it is missing or damaged (the part then starts
    afresh: a damaged file costs its recompute, never a wrong number)."""
    if not path.is_file():
        return None
    try:
        saved = serialization.msgpack_restore(path.read_bytes())
    except Exception:  # noqa: BLE001 - msgpack raises several types on damaged bytes
        return None
    return saved if isinstance(saved, dict) else None


def _as_arrays(tree: dict) -> dict:
    return {key: _as_arrays(value) if isinstance(value, dict) else np.asarray(value)
            for key, value in tree.items()}
