"""On-disk cache of finished evaluation runs, keyed by everything that determines them.

A key is the SHA-256 of a canonical JSON description (task config, optimizer identity and
hyperparameters, horizon, seeds, …); a value is a small JSON document of final losses and
mean curves. Adding a baseline or more tasks to an evaluation reuses every finished run.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from lopt_cli.io import write_json_atomic


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


def cached(directory: Path | None, description: Any, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """``compute()``'s result for ``description``, from the cache when present.

    Returns ``(value, was_cached)``. ``directory=None`` disables caching.
    """
    if directory is None:
        return compute(), False
    path = Path(directory) / f"{cache_key(description)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text()), True
        except (OSError, json.JSONDecodeError):
            path.unlink(missing_ok=True)  # a damaged entry is recomputed
    value = compute()
    write_json_atomic(path, value)
    return value, False
