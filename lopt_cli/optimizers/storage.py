"""Saving and loading learned optimizers: ``learned_optimizer.msgpack`` (flax-serialised
meta-parameters) with ``learned_optimizer.yaml`` beside it (the architecture config, with its
``_target_``, needed to rebuild the module, and ``weights_sha256``, the checksum of the
weights file).

Loading refuses, in one line each: a weights file whose checksum does not match (flipped
bytes of the right length included), weights that do not fit the architecture, and weights
with a non-finite entry. Files written before checksums existed (no ``weights_sha256``) load
without the checksum check."""
from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import yaml
from flax import serialization

from lopt_cli.config import instantiate_plain
from lopt_cli.errors import LoptUserError
from lopt_cli.io import sha256_hex, write_bytes_atomic, write_text_atomic
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams

WEIGHTS_FILE = "learned_optimizer.msgpack"
CONFIG_FILE = "learned_optimizer.yaml"
LAST_DIR = "last"  # a run publishing an average of θ keeps its raw last θ here (never `latest`)
CHECKSUM_KEY = "weights_sha256"  # in CONFIG_FILE: SHA-256 of WEIGHTS_FILE's bytes
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_SOURCE = "default"  # the name that means the recommended shipped optimizer
DEFAULT_POINTER = "DEFAULT"  # in PRETRAINED_DIR: one line, the recommended shipped name


def save_learned_optimizer(directory: str | os.PathLike, config: dict, theta: MetaParams) -> Path:
    """Writes weights, then the architecture config with their checksum, each atomically;
    returns the weights path."""
    directory = Path(directory)
    weights = serialization.to_bytes(theta)
    path = write_bytes_atomic(directory / WEIGHTS_FILE, weights)
    described = {**config, CHECKSUM_KEY: sha256_hex(weights)}
    write_text_atomic(directory / CONFIG_FILE, yaml.safe_dump(described, sort_keys=False))
    return path


def find_latest_run(root: str | os.PathLike = "outputs", key: str = "learned_optimizer") -> Path:
    """The newest run directory under ``root`` that holds a learned optimizer (``key``: the
    config key named in the error when there is none). A run's ``last/`` (its raw last θ, beside
    the published average) is not a run: it is written after the run's own file."""
    candidates = sorted((p for p in Path(root).glob(f"**/{WEIGHTS_FILE}")
                         if not (p.parent.name == LAST_DIR
                                 and (p.parent.parent / WEIGHTS_FILE).is_file())),
                        key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise LoptUserError(
            f"{key}=latest: no {WEIGHTS_FILE} under {Path(root).resolve()}; "
            "run `lopt meta-train` first or pass a path"
        )
    return candidates[-1]


def shipped_names() -> list[str]:
    """Names of the learned optimizers shipped in ``PRETRAINED_DIR``."""
    return sorted(p.parent.name for p in PRETRAINED_DIR.glob(f"*/{WEIGHTS_FILE}"))


def default_shipped_name() -> str:
    """The shipped optimizer that ``default`` means: the name in ``PRETRAINED_DIR/DEFAULT``."""
    pointer = PRETRAINED_DIR / DEFAULT_POINTER
    name = pointer.read_text().strip() if pointer.is_file() else ""
    if not name or "/" in name or not (PRETRAINED_DIR / name / WEIGHTS_FILE).is_file():
        raise LoptUserError(
            f"{DEFAULT_SOURCE}: {pointer} names {name!r}, not a shipped optimizer (shipped: "
            f"{', '.join(shipped_names()) or 'none'})")
    return name


def set_default_shipped_name(name: str) -> Path:
    """Points ``default`` at the shipped optimizer ``name`` (rewrites ``DEFAULT``)."""
    if name not in shipped_names():
        raise LoptUserError(f"default: {name!r} is not shipped (shipped: "
                            f"{', '.join(shipped_names()) or 'none'})")
    return write_text_atomic(PRETRAINED_DIR / DEFAULT_POINTER, name + "\n")


# A --multirun sweep's summary over its jobs (lopt_cli.scripts.sweep_summary), in its directory.
SWEEP_SUMMARY_FILE = "sweep_summary.json"


def sweep_hint(path: Path) -> str | None:
    """For a ``--multirun`` sweep directory: which of its jobs hold weights, and the best one
    by its sweep summary when it has one; ``None`` for any other directory."""
    import json

    jobs = sorted((p for p in path.iterdir() if p.name.isdigit() and (p / WEIGHTS_FILE).is_file()),
                  key=lambda p: int(p.name))
    if not jobs:
        return None
    try:
        best = json.loads((path / SWEEP_SUMMARY_FILE).read_text()).get("best_job")
    except (OSError, ValueError, AttributeError):
        best = None
    named = ", ".join(p.name for p in jobs)
    return (f"a sweep directory; give one of its jobs ({named}: {path}/<job>)"
            + (f", e.g. the best in its {SWEEP_SUMMARY_FILE}: {path / str(best)}" if best else ""))


def resolve_weights_path(source: str | os.PathLike, key: str = "learned_optimizer") -> Path:
    """Accepts a ``.msgpack`` file, a run directory, ``latest``, a shipped optimizer's name, or
    ``default`` (the recommended shipped one, see :func:`default_shipped_name`). An existing
    path wins over a name. ``key``: the config key named in errors."""
    text = str(source)
    if text == "latest":
        return find_latest_run(key=key)
    if text == DEFAULT_SOURCE and not Path(text).exists():
        text = default_shipped_name()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise LoptUserError(f"{key}={text!r}: " + (sweep_hint(path) or (
                f"the directory holds no {WEIGHTS_FILE} (a meta-train run writes one at its "
                "first checkpoint)")))
        path = path / WEIGHTS_FILE
    elif not path.exists() and (PRETRAINED_DIR / text / WEIGHTS_FILE).exists():
        path = PRETRAINED_DIR / text / WEIGHTS_FILE
    if not path.is_file():
        raise LoptUserError(
            f"{key}={text!r}: no such file; give a {WEIGHTS_FILE} path, a run "
            f"directory holding one, 'latest', '{DEFAULT_SOURCE}', or a shipped name "
            f"({', '.join(shipped_names()) or 'none'})"
        )
    return path


def load_learned_optimizer(
    source: str | os.PathLike, key: str = "learned_optimizer"
) -> tuple[LearnedOptimizer, MetaParams, dict]:
    """Rebuilds ``(lopt, theta, config)`` from a file, a run directory or a shipped name
    (``key``: the config key named when ``source`` names nothing)."""
    weights_path = resolve_weights_path(source, key)
    config_path = weights_path.with_name(CONFIG_FILE)
    weights = weights_path.read_bytes()
    if not config_path.is_file():
        _check_decodable(weights, weights_path)
        raise LoptUserError(f"{weights_path}: missing {CONFIG_FILE} beside it (architecture)")
    config = read_config(config_path)
    expected = config.pop(CHECKSUM_KEY, None)
    if expected is not None and sha256_hex(weights) != expected:
        raise LoptUserError(f"{weights_path}: corrupt weights (SHA-256 does not match "
                            f"{CHECKSUM_KEY} in {config_path.name})")
    lopt = instantiate_plain(config)
    template = lopt.init(jax.random.PRNGKey(0))
    try:
        theta = serialization.from_bytes(template, weights)
    except Exception as error:  # msgpack or structure mismatch
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LoptUserError(
            f"{weights_path}: not a learned optimizer matching {config_path.name} ({reason})"
        ) from None
    shapes_ok = jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, template, theta)
    )
    if not shapes_ok:
        raise LoptUserError(f"{weights_path}: weight shapes do not match {config_path.name}")
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(theta)):
        raise LoptUserError(f"{weights_path}: the weights contain NaN or infinite values; "
                            "refusing to use them")
    return lopt, theta, config


def read_config(config_path: Path) -> dict:
    """The architecture mapping of ``config_path`` (one-line LoptUserError otherwise)."""
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise LoptUserError(f"{config_path}: unreadable YAML ({problem}{at})") from None
    if not isinstance(config, dict) or "_target_" not in config:
        raise LoptUserError(f"{config_path}: expected a mapping with a _target_")
    return config


def _check_decodable(weights: bytes, weights_path: Path) -> None:
    """A one-line error if ``weights`` is not a msgpack document (empty, truncated, not ours)."""
    try:
        serialization.msgpack_restore(weights)
    except Exception:  # noqa: BLE001 - any decoding failure is the same to the user
        raise LoptUserError(f"{weights_path}: unreadable weights file ({len(weights)} bytes, not "
                            f"flax msgpack), and no {CONFIG_FILE} beside it") from None
