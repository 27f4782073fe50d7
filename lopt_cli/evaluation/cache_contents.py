"""What lopt keeps on disk between commands, and removing it (``lopt cache``).

Four places, each a directory that may be missing:

- **evaluation runs**: ``<cache>/eval/<key>.json``, one per (task, optimizer, settings)
  (:class:`~lopt_cli.evaluation.cache.RunCache`). Runs stored since December 2026 also have a
  line ``{"key", "label"}`` in ``<cache>/eval/labels.jsonl`` saying which task and
  optimizer they belong to (``"mlp_wide_digits: AdamLR"``); older runs are unlabelled.
- **stopped benchmark parts**: ``<cache>/eval/partial/<part key>/``, the state of a part that
  ``lopt evaluate benchmark=...`` was asked to stop (:mod:`partial_runs`), with an
  ``about.json`` naming it.
- **compiled programs**: JAX's persistent compilation cache (``LOPT_JAX_CACHE``).
- **built datasets**: the offline TFDS builders' output (``LOPT_DATA_DIR``); listed, never
  removed here (a user's own catalog datasets may live there).

Nothing here imports JAX: ``lopt cache`` answers at once.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from lopt_cli.evaluation.cache import ABOUT_FILE, LABELS_FILE, PARTIAL_DIR, read_labels
from lopt_cli.io import write_jsonl_atomic

CLEARABLE = ("runs", "stopped", "compile")


class Area(NamedTuple):
    """One kept place: what it is, where, how many entries, their bytes and newest time."""

    name: str
    path: Path | None  # None: turned off
    entries: int
    size: int
    newest: float | None  # seconds since the epoch


class StoppedPart(NamedTuple):
    """The kept state of one stopped benchmark part."""

    path: Path
    label: str  # "task: optimizer", or "" when kept before parts were named
    stopped: str  # "stopped after segment 4 of 10", or ""
    size: int
    kept_at: float


class Cleared(NamedTuple):
    entries: int
    size: int


def compile_cache_dir() -> Path | None:
    """``$LOPT_JAX_CACHE`` (empty: turned off), else ``~/.cache/lopt/jax``."""
    configured = os.environ.get("LOPT_JAX_CACHE", str(Path.home() / ".cache" / "lopt" / "jax"))
    return Path(configured).expanduser() if configured else None


def data_dir() -> Path:
    """Where the offline datasets are built: ``task_definitions.datasets.default_data_dir``
    (``$LOPT_DATA_DIR``, else ``~/.cache/lopt/tensorflow_datasets``), without importing JAX."""
    configured = os.environ.get("LOPT_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "lopt" / "tensorflow_datasets"


def tree_size(path: Path) -> tuple[int, int, float | None]:
    """``(files, bytes, newest mtime)`` of every file under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        stat = path.stat()
        return 1, stat.st_size, stat.st_mtime
    files, size, newest = 0, 0, None
    for root, _, names in os.walk(path):
        for name in names:
            try:
                stat = (Path(root) / name).stat()
            except OSError:  # removed while we looked
                continue
            files, size = files + 1, size + stat.st_size
            newest = stat.st_mtime if newest is None else max(newest, stat.st_mtime)
    return files, size, newest


def run_files(eval_dir: Path) -> list[Path]:
    """The cached evaluation runs (``<key>.json``) in ``eval_dir``."""
    if not eval_dir.is_dir():
        return []
    return sorted(p for p in eval_dir.glob("*.json") if p.is_file())


def run_labels(eval_dir: Path) -> dict[str, str]:
    """``{key: "task: optimizer"}`` of the labelled runs in ``eval_dir``."""
    return read_labels(eval_dir)


def stopped_parts(eval_dir: Path) -> list[StoppedPart]:
    """Every kept stopped part under ``eval_dir/partial``, oldest first."""
    root = eval_dir / PARTIAL_DIR
    if not root.is_dir():
        return []
    parts = []
    for path in (p for p in root.iterdir() if p.is_dir()):
        _, size, newest = tree_size(path)
        about = _read_about(path / ABOUT_FILE)
        parts.append(StoppedPart(path, about.get("label", ""), about.get("stopped", ""), size,
                                 newest if newest is not None else path.stat().st_mtime))
    return sorted(parts, key=lambda part: part.kept_at)


def _read_about(path: Path) -> dict:
    try:
        about = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return about if isinstance(about, dict) else {}


def areas(eval_dir: Path, compile_dir: Path | None, data_dir: Path) -> list[Area]:
    """The four kept places, with their entry counts and sizes."""
    runs = run_files(eval_dir)
    run_stats = [tree_size(p) for p in runs]
    labels = eval_dir / LABELS_FILE
    label_size = labels.stat().st_size if labels.is_file() else 0
    parts = stopped_parts(eval_dir)
    compiled = tree_size(compile_dir) if compile_dir is not None and compile_dir.is_dir() \
        else (0, 0, None)
    datasets = [p for p in data_dir.iterdir() if p.is_dir()] if data_dir.is_dir() else []
    return [
        Area("evaluation runs", eval_dir, len(runs),
             sum(s for _, s, _ in run_stats) + label_size, _newest(t for _, _, t in run_stats)),
        Area("stopped benchmark parts", eval_dir / PARTIAL_DIR, len(parts),
             sum(p.size for p in parts), _newest(p.kept_at for p in parts)),
        Area("compiled programs", compile_dir, compiled[0], compiled[1], compiled[2]),
        Area("built datasets", data_dir, len(datasets),
             tree_size(data_dir)[1] if datasets else 0,
             _newest(tree_size(p)[2] for p in datasets)),
    ]


def _newest(times: Iterable[float | None]) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def older_than(mtime: float, days: float, now: float | None = None) -> bool:
    """Whether a file last written at ``mtime`` is more than ``days`` old (``days`` 0: all)."""
    return days <= 0 or (now if now is not None else time.time()) - mtime > days * 86400.0


def clear_runs(eval_dir: Path, match: str = "", days: float = 0.0,
               dry_run: bool = False) -> Cleared:
    """Removes the cached evaluation runs older than ``days`` whose label contains ``match``
    (``match`` empty: labelled or not); the labels of removed runs leave ``labels.jsonl``."""
    labels = run_labels(eval_dir)
    chosen = [p for p in run_files(eval_dir)
              if (not match or match in labels.get(p.stem, ""))
              and older_than(p.stat().st_mtime, days)]
    size = sum(p.stat().st_size for p in chosen)
    if not dry_run and chosen:
        for path in chosen:
            path.unlink(missing_ok=True)
        removed = {p.stem for p in chosen}
        write_jsonl_atomic(eval_dir / LABELS_FILE,
                           [{"key": k, "label": v} for k, v in labels.items()
                            if k not in removed and (eval_dir / f"{k}.json").is_file()])
    return Cleared(len(chosen), size)


def clear_stopped(eval_dir: Path, match: str = "", days: float = 0.0,
                  dry_run: bool = False) -> Cleared:
    """Removes the kept state of stopped parts older than ``days`` whose label contains
    ``match``; the next ``lopt evaluate`` of such a part computes it from its start."""
    chosen = [p for p in stopped_parts(eval_dir)
              if (not match or match in p.label) and older_than(p.kept_at, days)]
    if not dry_run:
        for part in chosen:
            shutil.rmtree(part.path, ignore_errors=True)
    return Cleared(len(chosen), sum(p.size for p in chosen))


def clear_compiled(compile_dir: Path | None, days: float = 0.0,
                   dry_run: bool = False) -> Cleared:
    """Removes JAX's cached compiled programs older than ``days``: the next commands compile
    them again."""
    if compile_dir is None or not compile_dir.is_dir():
        return Cleared(0, 0)
    chosen = [p for p in compile_dir.rglob("*")
              if p.is_file() and older_than(p.stat().st_mtime, days)]
    size = sum(p.stat().st_size for p in chosen)
    if not dry_run:
        for path in chosen:
            path.unlink(missing_ok=True)
    return Cleared(len(chosen), size)
