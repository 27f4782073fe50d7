"""On-disk cache of finished evaluation runs, keyed by everything that determines them.

A key is the SHA-256 of a canonical JSON description (task config, optimizer identity and
hyperparameters, horizon, seeds, …); a value is a small JSON document of final losses and
mean curves. Adding a baseline or more tasks to an evaluation reuses every finished run.
"""
from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass
class RunCache:
    """A cache directory (``None``: no caching) and counts of hits and computed runs."""

    directory: Path | None
    hits: int = 0
    computed: int = 0

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
        return Path(self.directory) / f"{cache_key(description)}.json"

    def contains(self, description: Any) -> bool:
        path = self._path(description)
        return path is not None and path.is_file()

    def lookup(self, description: Any) -> dict | None:
        """The cached value of ``description`` (counted as a hit), or ``None``."""
        path = self._path(description)
        if path is not None and path.is_file():
            try:
                value = json.loads(path.read_text())
                self.hits += 1
                return value
            except (OSError, json.JSONDecodeError):
                path.unlink(missing_ok=True)  # a damaged entry is recomputed
        return None

    def store(self, description: Any, value: dict, label: str = "") -> dict:
        """Records a computed value (counted as computed); a ``label`` ("task: optimizer")
        names it in ``labels.jsonl`` for ``lopt cache`` (the key does not depend on it)."""
        self.computed += 1
        path = self._path(description)
        if path is not None:
            write_json_atomic(path, value)
            if label:
                append_jsonl(path.parent / LABELS_FILE, {"key": path.stem, "label": label})
        return value

    def get(self, description: Any, compute: Callable[[], dict], label: str = "") -> dict:
        """``compute()``'s result for ``description``, from the cache when present."""
        value = self.lookup(description)
        return value if value is not None else self.store(description, compute(), label)
