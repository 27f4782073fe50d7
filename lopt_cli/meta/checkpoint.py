"""Checkpoints of a meta-training run: everything needed to continue it bit for bit.

One file, ``checkpoint.msgpack`` in the run directory, written atomically (temp file + rename)
so that a run killed at any moment leaves either the previous or the new checkpoint. It is an
envelope ``{version, sha256, body}``: ``body`` is the msgpack payload below and ``sha256`` its
checksum, verified before anything is restored, so a damaged file (flipped bytes of the same
length included) is reported in one line instead of resuming with other numbers. The payload
holds, as flax msgpack:

* ``step`` (the next outer step) and ``key`` (the run's raw ``uint32`` key; every draw of step
  ``t`` is ``fold_in(key, t)``, so nothing else about the RNG needs saving),
* ``theta``, ``opt_state`` (the outer optimizer's) and ``states`` (the estimator's per-member
  inner states: parameters, optimizer states, steps, horizons and keys of the population),
* ``members``: the population as ``[task id, seed offset]`` rows, from which the stacked tasks
  are rebuilt (task sampling is deterministic in the id),
* ``metrics``: the ``metrics.jsonl`` rows up to ``step``, so a resumed run rewrites the file
  without the rows written after the checkpoint.

Restoring needs templates (the pytree structure, shapes and dtypes); they come from
``jax.eval_shape`` of the same constructors, so nothing is computed. A file that does not match
them is reported in one line (:class:`lopt_cli.errors.LoptUserError`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from lopt_cli.errors import LoptUserError
from lopt_cli.io import sha256_hex, write_bytes_atomic
from lopt_cli.meta.outer import (
    MetaTrainSettings,
    MetaTrainState,
    build_members,
    run_keys,
)
from lopt_cli.meta.problem import TruncatedProblem, with_horizon_cap

CHECKPOINT_FILE = "checkpoint.msgpack"
FORMAT_VERSION = 2


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def has_checkpoint(directory: str | os.PathLike) -> bool:
    return checkpoint_path(directory).is_file()


def encode(state: MetaTrainState, seed: int, rows: list[dict]) -> bytes:
    """The checkpoint bytes of ``state`` of a run with seed ``seed`` and metrics ``rows``."""
    payload = {
        "version": FORMAT_VERSION,
        "step": int(state.step),
        "key": np.asarray(run_keys(seed)[0], np.uint32),
        "theta": serialization.to_state_dict(state.theta),
        "opt_state": serialization.to_state_dict(state.opt_state),
        "states": serialization.to_state_dict(state.states),
        "members": np.asarray(state.members, np.int64).reshape(-1, 2),
        "metrics": "".join(json.dumps(row) + "\n" for row in rows[: int(state.step)]),
    }
    body = serialization.msgpack_serialize(jax.device_get(payload))
    return serialization.msgpack_serialize(
        {"version": FORMAT_VERSION, "sha256": sha256_hex(body), "body": body})


def save_checkpoint(directory: str | os.PathLike, state: MetaTrainState, seed: int,
                    rows: list[dict]) -> Path:
    """Writes the checkpoint of ``state`` atomically into ``directory``."""
    return write_bytes_atomic(checkpoint_path(directory), encode(state, seed, rows))


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Deletes temp files a killed run left behind (``.NAME.XXXX.tmp``, see lopt_cli.io)."""
    for stale in Path(directory).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def restore_tree(template: Any, raw: Any, what: str, source: Path) -> Any:
    """``raw`` (a msgpack state dict) in the structure of ``template``, shapes and dtypes
    checked. (Meta-training state has no weak-typed leaves, so the restored avals, and with
    them the compiled steps, are those of an uninterrupted run.)"""
    try:
        tree = serialization.from_state_dict(template, raw)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LoptUserError(f"{source}: incompatible checkpoint ({what}: {reason})") from None
    leaves, treedef = jax.tree_util.tree_flatten(template)
    values = treedef.flatten_up_to(tree)
    out = []
    for spec, value in zip(leaves, values):
        value = np.asarray(value)
        if value.shape != tuple(spec.shape) or value.dtype != spec.dtype:
            raise LoptUserError(
                f"{source}: incompatible checkpoint ({what}: {value.dtype}{list(value.shape)} "
                f"where this config needs {spec.dtype}{list(spec.shape)})")
        out.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, out)


def read_raw(directory: str | os.PathLike) -> dict:
    """The decoded checkpoint of ``directory`` (LoptUserError if missing or unreadable)."""
    path = checkpoint_path(directory)
    if not path.is_file():
        raise LoptUserError(f"resume: no {CHECKPOINT_FILE} in {Path(directory)}; nothing to "
                            "resume (a run writes one every checkpoint_every outer steps)")
    envelope = _decode(path.read_bytes(), path)
    if not isinstance(envelope, dict) or envelope.get("version") != FORMAT_VERSION:
        raise LoptUserError(f"{path}: not a lopt checkpoint of format {FORMAT_VERSION}")
    body = envelope.get("body")
    if not isinstance(body, bytes) or sha256_hex(body) != envelope.get("sha256"):
        raise LoptUserError(f"{path}: corrupt checkpoint (its SHA-256 checksum does not match "
                            "its contents); resume from a copy or start afresh")
    raw = _decode(body, path)
    if not isinstance(raw, dict):
        raise LoptUserError(f"{path}: not a lopt checkpoint of format {FORMAT_VERSION}")
    return raw


def _decode(data: bytes, path: Path) -> object:
    try:
        return serialization.msgpack_restore(data)
    except Exception as error:  # noqa: BLE001 - any decoding failure is the same to the user
        raise LoptUserError(f"{path}: unreadable checkpoint ({type(error).__name__})") from None


def load_checkpoint(
    directory: str | os.PathLike,
    family,
    problem: TruncatedProblem,
    estimator,
    outer_tx,
    settings: MetaTrainSettings,
) -> tuple[MetaTrainState, list[dict]]:
    """The :class:`MetaTrainState` and metrics rows saved in ``directory``."""
    path = checkpoint_path(directory)
    raw = read_raw(directory)
    key, init_key = run_keys(settings.seed)
    if not np.array_equal(np.asarray(raw["key"]), np.asarray(key)):
        raise LoptUserError(f"{path}: written by a run with another seed than seed="
                            f"{settings.seed}")
    step = int(raw["step"])
    if not 0 < step <= settings.num_outer_steps:
        raise LoptUserError(f"{path}: step {step} outside this run's 1..{settings.num_outer_steps}")
    theta_spec = jax.eval_shape(problem.lopt.init, init_key)
    theta = restore_tree(theta_spec, raw["theta"], "theta", path)
    opt_state = restore_tree(jax.eval_shape(outer_tx.init, theta_spec), raw["opt_state"],
                             "outer optimizer state", path)
    members = tuple(tuple(int(v) for v in row) for row in np.asarray(raw["members"]).tolist())
    if len(members) != settings.num_tasks:
        raise LoptUserError(f"{path}: {len(members)} population members where this config "
                            f"has compute.num_tasks={settings.num_tasks}")
    tasks = with_horizon_cap(build_members(family, members), problem.max_horizon)
    states_spec = jax.eval_shape(
        lambda th, t, k: estimator.init_states(problem, th, t, k), theta_spec, tasks, key)
    states = restore_tree(states_spec, raw["states"], "estimator states", path)
    rows = [json.loads(line) for line in str(raw["metrics"]).splitlines() if line.strip()]
    return MetaTrainState(step, theta, opt_state, states, members), rows
