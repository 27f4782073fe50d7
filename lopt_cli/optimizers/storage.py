"""Saving and loading learned optimizers: ``learned_optimizer.msgpack`` (flax-serialised
meta-parameters) with ``learned_optimizer.yaml`` beside it (the architecture config, with its
``_target_``, needed to rebuild the module)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import yaml
from flax import serialization

from lopt_cli.config import instantiate_plain
from lopt_cli.errors import LoptUserError
from lopt_cli.io import write_bytes_atomic, write_text_atomic
from lopt_cli.optimizers.base import LearnedOptimizer, MetaParams

WEIGHTS_FILE = "learned_optimizer.msgpack"
CONFIG_FILE = "learned_optimizer.yaml"
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def as_hashable(value: Any) -> Any:
    """Lists (from YAML) become tuples, recursively, so configs can be static jit arguments."""
    if isinstance(value, (list, tuple)):
        return tuple(as_hashable(v) for v in value)
    if isinstance(value, dict):
        return {k: as_hashable(v) for k, v in value.items()}
    return value


def save_learned_optimizer(directory: str | os.PathLike, config: dict, theta: MetaParams) -> Path:
    """Writes weights and architecture config atomically; returns the weights path."""
    directory = Path(directory)
    write_text_atomic(directory / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    return write_bytes_atomic(directory / WEIGHTS_FILE, serialization.to_bytes(theta))


def find_latest_run(root: str | os.PathLike = "outputs") -> Path:
    """The newest run directory under ``root`` that holds a learned optimizer."""
    candidates = sorted(Path(root).glob(f"**/{WEIGHTS_FILE}"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise LoptUserError(
            f"learned_optimizer=latest: no {WEIGHTS_FILE} under {Path(root).resolve()}; "
            "run `lopt meta-train` first or pass a path"
        )
    return candidates[-1]


def resolve_weights_path(source: str | os.PathLike) -> Path:
    """Accepts a ``.msgpack`` file, a run directory, ``latest``, or a shipped optimizer's name."""
    text = str(source)
    if text == "latest":
        return find_latest_run()
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    elif not path.exists() and (PRETRAINED_DIR / text / WEIGHTS_FILE).exists():
        path = PRETRAINED_DIR / text / WEIGHTS_FILE
    if not path.is_file():
        shipped = sorted(p.parent.name for p in PRETRAINED_DIR.glob(f"*/{WEIGHTS_FILE}"))
        raise LoptUserError(
            f"learned_optimizer={text!r}: no such file; give a {WEIGHTS_FILE} path, a run "
            f"directory holding one, 'latest', or a shipped name ({', '.join(shipped) or 'none'})"
        )
    return path


def load_learned_optimizer(source: str | os.PathLike) -> tuple[LearnedOptimizer, MetaParams, dict]:
    """Rebuilds ``(lopt, theta, config)`` from a file, a run directory or a shipped name."""
    weights_path = resolve_weights_path(source)
    config_path = weights_path.with_name(CONFIG_FILE)
    if not config_path.is_file():
        raise LoptUserError(f"{weights_path}: missing {CONFIG_FILE} beside it (architecture)")
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as error:
        raise LoptUserError(f"{config_path}: unreadable YAML ({error})") from None
    if not isinstance(config, dict) or "_target_" not in config:
        raise LoptUserError(f"{config_path}: expected a mapping with a _target_")
    lopt = instantiate_plain(config)
    template = lopt.init(jax.random.PRNGKey(0))
    try:
        theta = serialization.from_bytes(template, weights_path.read_bytes())
    except Exception as error:  # msgpack or structure mismatch
        raise LoptUserError(
            f"{weights_path}: not a learned optimizer matching {config_path.name} ({error})"
        ) from None
    shapes_ok = jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, template, theta)
    )
    if not shapes_ok:
        raise LoptUserError(f"{weights_path}: weight shapes do not match {config_path.name}")
    return lopt, theta, config
