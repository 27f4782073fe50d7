"""Datasets as whole NumPy arrays, built offline as TFDS ``array_record`` datasets on first use.

Built-in datasets (generated locally, never downloaded, no TensorFlow needed):

======== ================================================ =====================
name     features                                         train / valid / test
======== ================================================ =====================
digits   ``image`` float32 (8, 8) in [0, 1], ``label``    1078 / 359 / 360
mnist1d  ``x`` float32 (40,), ``label`` (10 classes)      5000 / 1000 / 1000
text     ``tokens`` int32 (65,), bytes (vocab 256)        9600 / 1200 / 1200
synthetic ``x`` float32 (16,), ``label`` (4 classes)      4000 / 1000 / 1000
======== ================================================ =====================

Labels are int64. Any other name is looked up as a TFDS catalog dataset (``"mnist"``,
``"cifar10"``, ``"name/config:1.2.3"``) that must already be prepared in ``array_record`` format
under the data directory; see :mod:`task_definitions.datasets.catalog`.

>>> from task_definitions.datasets import load_arrays
>>> splits = load_arrays("digits")  # doctest: +SKIP
>>> splits["train"]["image"].shape, splits["valid"]["label"].dtype  # doctest: +SKIP
((1078, 8, 8), dtype('int64'))
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from lopt_cli.errors import LoptUserError
from task_definitions.datasets.generators import TEXT_SEQ_LEN, TEXT_VOCAB_SIZE

__all__ = ["BUILTIN_DATASETS", "DATA_DIR_ENV", "TEXT_SEQ_LEN", "TEXT_VOCAB_SIZE",
           "check_available", "default_data_dir", "is_available", "load_arrays", "vocab_size"]

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist1d", "text", "synthetic")
DATA_DIR_ENV = "LOPT_DATA_DIR"

Splits = dict[str, dict[str, np.ndarray]]


def default_data_dir() -> Path:
    """``$LOPT_DATA_DIR`` if set, else ``~/.cache/lopt/tensorflow_datasets``."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "lopt" / "tensorflow_datasets"


def load_arrays(name: str, data_dir: str | os.PathLike | None = None) -> Splits:
    """``{"train" | "valid" | "test": {feature: array}}`` for a dataset, built on first use.

    Args:
      name: a built-in name (see ``BUILTIN_DATASETS``; ``"lopt_<name>"`` also works) or a TFDS
        catalog name (``"mnist"``, ``"cifar10/config:1.0.0"``) prepared under ``data_dir``.
      data_dir: the TFDS data directory; defaults to :func:`default_data_dir`.

    Returns:
      Read-only arrays with a leading example axis, cached in-process per (name, data_dir).

    Raises:
      LoptUserError: unknown name, or a catalog dataset that is not prepared locally.
    """
    root = _root(data_dir)
    cached = _load_cached(str(name).strip(), os.fspath(root.absolute()))
    return {split: dict(arrays) for split, arrays in cached.items()}


def _root(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def is_available(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`load_arrays` can read ``name`` offline: a built-in (built locally on first
    use) or a catalog dataset already prepared under ``data_dir``. Reads no data."""
    name = str(name).strip()
    if _builtin_key(name) is not None:
        return True
    from task_definitions.datasets import catalog

    parsed = catalog.parse_name(name)
    return parsed is not None and catalog.find_prepared(_root(data_dir), *parsed) is not None


def check_available(name: str, data_dir: str | os.PathLike | None = None) -> None:
    """Raises the one-line :class:`LoptUserError` that :func:`load_arrays` would raise for a
    dataset it cannot read offline (unknown, or not prepared); reads no data."""
    if not is_available(name, data_dir):
        _catalog_dir(str(name).strip(), _root(data_dir).absolute())


def vocab_size(name: str = "text") -> int:
    """Number of token ids of a token dataset (``text``: 256, raw bytes)."""
    if _builtin_key(name) == "text":
        return TEXT_VOCAB_SIZE
    raise LoptUserError(f"dataset {name!r} has no token vocabulary; token datasets: text")


def _builtin_key(name: str) -> str | None:
    key = name.removeprefix("lopt_")
    return key if key in BUILTIN_DATASETS else None


def _freeze(splits: Splits) -> Splits:
    for arrays in splits.values():
        for array in arrays.values():
            array.flags.writeable = False
    return splits


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, data_dir: str) -> Splits:
    root = Path(data_dir)
    key = _builtin_key(name)
    if key is not None:
        return _freeze(_load_builtin(key, root))
    return _freeze(_load_catalog(name, root))


def _load_builtin(key: str, root: Path) -> Splits:
    from task_definitions.datasets import storage
    from task_definitions.datasets.builders import BUILDERS

    version_dir = storage.prepare(BUILDERS[key], root)
    try:
        splits = storage.read_splits(storage.open_builder(version_dir), ("train", "valid", "test"))
    except Exception as error:  # noqa: BLE001 - a damaged cache: say where, and how to rebuild
        raise LoptUserError(
            f"cannot read dataset {key!r} from {version_dir} ({storage.describe_error(error)}); "
            "delete that folder to rebuild it") from None
    return {split: _typed(arrays) for split, arrays in splits.items()}


def _typed(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Labels as int64 (TFDS may hand back another integer width)."""
    return {k: v.astype(np.int64) if k == "label" else v for k, v in arrays.items()}


def _unknown_message(name: str, root: Path) -> str:
    return (f"unknown dataset {name!r}: use one of {', '.join(BUILTIN_DATASETS)} (built "
            "offline), or a TFDS catalog name (e.g. mnist) prepared as array_record in "
            f"the data directory {root}")


def _catalog_dir(name: str, root: Path) -> Path:
    """The prepared copy of catalog dataset ``name``, or a one-line error: unknown name, or a
    catalog dataset that is not prepared locally."""
    from task_definitions.datasets import catalog

    parsed = catalog.parse_name(name)
    if parsed is None:
        raise LoptUserError(_unknown_message(name, root))
    version_dir = catalog.find_prepared(root, *parsed)
    if version_dir is not None:
        return version_dir
    if parsed[0] in catalog.catalog_names():
        raise LoptUserError(catalog.not_offline_message(name, root))
    raise LoptUserError(_unknown_message(name, root))


def _load_catalog(name: str, root: Path) -> Splits:
    from task_definitions.datasets import catalog

    return catalog.load_prepared(_catalog_dir(name, root), name)
