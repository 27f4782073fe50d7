"""Carrying finished evaluation runs between machines (``lopt cache export=DIR`` /
``lopt cache import=DIR``).

An export is itself an evaluation cache directory: the chosen runs (``<key>.json``), their
``labels.jsonl`` lines, the stopped parts they match (``partial/``) and the cache's
``measuring_code.txt``. Importing it into another machine's cache lets the same
``lopt evaluate`` command there read those runs back and continue those parts, so one
leaderboard can gather parts computed on several machines.

A key holds the digest of the code that trains and measures unless that code is the one the
cache first ran (:meth:`RunCache.keyed`). Runs keyed without it can therefore be moved only
between caches that first ran the same code: into any other, a later command of the code that
cache first ran would read them back as its own. Such an import is refused, in one line; an
import into a cache that has keyed nothing yet adopts the export's first code.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from lopt_cli.errors import LoptUserError
from lopt_cli.evaluation.cache import (
    FIRST_CODE_FILE,
    LABELS_FILE,
    PARTIAL_DIR,
    first_code,
    read_labels,
)
from lopt_cli.evaluation.cache_contents import run_files, stopped_parts
from lopt_cli.io import append_jsonl


class Carried(NamedTuple):
    """What an export or import copied: runs, stopped parts, bytes; and runs already there."""

    runs: int
    parts: int
    size: int
    present: int


def export_runs(eval_dir: Path, destination: Path, match: str = "",
                dry_run: bool = False) -> Carried:
    """Copies the runs of ``eval_dir`` whose label contains ``match`` (empty: every run,
    labelled or not) and the stopped parts so labelled into ``destination``, an evaluation
    cache directory (created if missing; one that first ran other code is refused)."""
    source_code = first_code(eval_dir)
    if source_code is None:
        raise LoptUserError(f"{eval_dir} holds no evaluation runs to export")
    _check_codes(destination, source_code, f"{destination} (the export's directory)",
                 "export into a new directory instead")
    return _carry(eval_dir, destination, match, source_code, dry_run)


def import_runs(source: Path, eval_dir: Path, dry_run: bool = False) -> Carried:
    """Copies every run and stopped part of ``source`` (a ``lopt cache export=`` directory,
    or another machine's ``eval`` cache) into ``eval_dir``; runs already there are kept."""
    if not source.is_dir():
        raise LoptUserError(f"{source}: no such directory to import")
    source_code = first_code(source)
    if source_code is None:
        raise LoptUserError(f"{source} is no lopt evaluation cache (no {FIRST_CODE_FILE}: "
                            "make one with `lopt cache export=DIR`)")
    _check_codes(eval_dir, source_code, f"this machine's cache ({eval_dir})",
                 "carry them into a fresh directory instead (LOPT_CACHE_DIR=<new dir> "
                 "lopt cache import=...)")
    return _carry(source, eval_dir, "", source_code, dry_run)


def _check_codes(target: Path, source_code: str, name: str, instead: str) -> None:
    target_code = first_code(target)
    if target_code is not None and target_code != source_code:
        raise LoptUserError(
            f"{name} first keyed runs of measuring code {target_code}, these runs' cache "
            f"{source_code}: their keys would be misread there; {instead}")


def _carry(source: Path, target: Path, match: str, source_code: str,
           dry_run: bool) -> Carried:
    labels = read_labels(source)
    runs = [p for p in run_files(source) if not match or match in labels.get(p.stem, "")]
    fresh = [p for p in runs if not (target / p.name).is_file()]
    parts = [part for part in stopped_parts(source) if not match or match in part.label]
    new_parts = [part for part in parts if not (target / PARTIAL_DIR / part.path.name).exists()]
    size = sum(p.stat().st_size for p in fresh) + sum(part.size for part in new_parts)
    if not dry_run and (fresh or new_parts):
        target.mkdir(parents=True, exist_ok=True)
        if first_code(target) is None:
            (target / FIRST_CODE_FILE).write_text(source_code + "\n", encoding="utf-8")
        for path in fresh:
            shutil.copy2(path, target / path.name)
        for part in new_parts:
            shutil.copytree(part.path, target / PARTIAL_DIR / part.path.name)
        _merge_labels(target, {p.stem: labels[p.stem] for p in runs if p.stem in labels})
    return Carried(len(fresh), len(new_parts), size, len(runs) - len(fresh))


def _merge_labels(target: Path, carried: dict[str, str]) -> None:
    """Appends to ``target``'s ``labels.jsonl`` the carried labels it lacks (appended, not
    rewritten: an evaluation running there meanwhile keeps its lines)."""
    present = read_labels(target)
    for key, label in carried.items():
        if key not in present:
            append_jsonl(target / LABELS_FILE, {"key": key, "label": label})
