"""Atomic file writing, strict JSON and content checksums (DESIGN §4, §5).

JSON files written by lopt are strict: a non-finite number (NaN, ±inf) is written as ``null``,
so any JSON parser reads them (Python's ``json`` alone would write the invalid token ``NaN``).
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path``, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the user's group
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (also inside dicts, lists and tuples) as ``None``."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0 and value.dtype.kind == "f":
        return float(value) if math.isfinite(float(value)) else None
    return value


def json_line(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``value`` (non-finite numbers as ``null``)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


def write_json_atomic(path: str | os.PathLike, value: Any) -> Path:
    return write_text_atomic(path, json_line(value, indent=2, sort_keys=True) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return write_text_atomic(path, "".join(json_line(row) + "\n" for row in rows))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Appends one JSON object as a line and flushes it to disk (a crash loses no earlier line)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json_line(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, as 64 hex digits (the checksum of checkpoints and weights)."""
    return hashlib.sha256(data).hexdigest()


def writable_targets(out: Path) -> Path:
    """``out``, once it is sure that it and the markdown beside it can become files: an
    existing directory, or a parent that is a file, fails here, before minutes of training."""
    for path in (out, out.with_suffix(".md")):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(parent))
    return out
