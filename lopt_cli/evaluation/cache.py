"""On-disk cache of finished evaluation runs, keyed by everything that determines them.

A key is the SHA-256 of a canonical JSON description (task config, optimizer identity and
hyperparameters, horizon, seeds, the digests of the task's and optimizer's code, …) and, once
it differs from the code the cache first ran, of the code that trains and measures
(:meth:`RunCache.keyed`); a value is a small JSON document of final losses and mean curves.
Adding a baseline or more tasks to an evaluation reuses every finished run.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lopt_cli.io import append_jsonl, write_json_atomic

LABELS_FILE = "labels.jsonl"  # {"key", "label"} per labelled run: what `lopt cache` lists
PARTIAL_DIR = "partial"  # the kept state of stopped benchmark parts (partial_runs)
ABOUT_FILE = "about.json"  # in a stopped part's directory: its label and where it stopped
# The measuring code (code_version.MEASURING_CODE) whose runs this cache keys without its
# digest: the code in use when the cache (or this file) was first written.
FIRST_CODE_FILE = "measuring_code.txt"


def default_cache_dir() -> Path:
    """``$LOPT_CACHE_DIR/eval`` if set, else ``~/.cache/lopt/eval``."""
    root = os.environ.get("LOPT_CACHE_DIR", str(Path.home() / ".cache" / "lopt"))
    return Path(root).expanduser() / "eval"


def cache_key(description: Any) -> str:
    """A stable hash of a JSON-serialisable description."""
    text = json.dumps(description, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return repr(value)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (identifies a learned optimizer's weights)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


def first_code(eval_dir: Path) -> str | None:
    """The measuring-code digest ``eval_dir`` first keyed runs with (:data:`FIRST_CODE_FILE`),
    or ``None`` if it has keyed none (no record, or an empty one)."""
    path = eval_dir / FIRST_CODE_FILE
    if not path.is_file():
        return None
    return path.read_text(errors="replace").strip() or None


@dataclasses.dataclass
class RunCache:
    """A cache directory (``None``: no caching) and counts of hits and computed runs."""

    directory: Path | None
    hits: int = 0
    computed: int = 0

    def keyed(self, description: Any) -> Any:
        """``description`` as its key is made: with the digest of the code that trains and
        measures (:data:`~lopt_cli.evaluation.code_version.MEASURING_CODE`), unless that code
        is the one this cache first ran (:data:`FIRST_CODE_FILE`), whose keys never held it.
        So an edit to that code recomputes every run, and reverting it finds them again."""
        digest = self._code_to_key
        if digest is None:
            return description
        if isinstance(description, dict):
            return {**description, "measuring_code": digest}
        return {"description": description, "measuring_code": digest}

    @functools.cached_property
    def _code_to_key(self) -> str | None:
        """The measuring code's digest when keys must hold it, else ``None`` (once per cache
        object: one command's keys all agree)."""
        from lopt_cli.evaluation.code_version import measuring_code_digest

        if self.directory is None:
            return None
        digest = measuring_code_digest()
        path = Path(self.directory) / FIRST_CODE_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(digest + "\n")
            except FileExistsError:  # another command wrote it first: read theirs
                pass
        try:
            first = first_code(Path(self.directory))
        except OSError:
            first = None  # unreadable: key by the digest (never another code's runs)
        return None if first == digest else digest

    def interrupted(self) -> str:
        """What an interrupted evaluation keeps, in one line."""
        return f"interrupted; {self.kept()}"

    def kept(self) -> str:
        """What this cache keeps of the runs so far, and what that is good for."""
        if self.directory is None:
            return f"nothing is kept (cache=false): {self.computed} runs were computed"
        return (f"the {self.computed} runs computed and {self.hits} read are cached in "
                f"{self.directory}: the same command continues from them")

    def _path(self, description: Any) -> Path | None:
        if self.directory is None:
            return None
        return Path(self.directory) / f"{cache_key(self.keyed(description))}.json"

    def contains(self, description: Any) -> bool:
        path = self._path(description)
        return path is not None and path.is_file()

    def lookup(self, description: Any, label: str = "") -> dict | None:
        """The cached value of ``description`` (counted as a hit), or ``None``; a run read
        back gets its ``label`` if it has none yet (runs stored before labels)."""
        path = self._path(description)
        if path is not None and path.is_file():
            try:
                value = json.loads(path.read_text())
                self.hits += 1
                self._label(path, label)
                return value
            except (OSError, json.JSONDecodeError):
                path.unlink(missing_ok=True)  # a damaged entry is recomputed
        return None

    def peek(self, description: Any) -> dict | None:
        """The cached value of ``description`` or ``None``, not counted as a hit (for
        estimates made before a run)."""
        path = self._path(description)
        try:
            return json.loads(path.read_text()) if path is not None and path.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None

    def store(self, description: Any, value: dict, label: str = "") -> dict:
        """Records a computed value (counted as computed); a ``label`` ("task: optimizer")
        names it in ``labels.jsonl`` for ``lopt cache`` (the key does not depend on it)."""
        self.computed += 1
        path = self._path(description)
        if path is not None:
            write_json_atomic(path, value)
            self._label(path, label)
        return value

    def get(self, description: Any, compute: Callable[[], dict], label: str = "") -> dict:
        """``compute()``'s result for ``description``, from the cache when present."""
        value = self.lookup(description, label)
        return value if value is not None else self.store(description, compute(), label)

    @functools.cached_property
    def _labelled(self) -> set[str]:
        return set(read_labels(Path(self.directory))) if self.directory is not None else set()

    def _label(self, path: Path, label: str) -> None:
        if label and path.stem not in self._labelled:
            append_jsonl(path.parent / LABELS_FILE, {"key": path.stem, "label": label})
            self._labelled.add(path.stem)


def read_labels(directory: Path) -> dict[str, str]:
    """``{key: "task: optimizer"}`` from a cache's ``labels.jsonl`` (a damaged line is
    skipped; the last label of a key wins)."""
    path = directory / LABELS_FILE
    if not path.is_file():
        return {}
    labels = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            labels[str(row["key"])] = str(row["label"])
        except (ValueError, KeyError, TypeError):
            continue
    return labels
