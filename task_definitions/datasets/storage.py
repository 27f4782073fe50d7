"""Building and reading TFDS ``array_record`` datasets: locked, atomic, quiet, vectorised.

A dataset counts as prepared when ``<data_dir>/<name>/<version>/dataset_info.json`` exists.
TFDS writes a build into ``<name>/incomplete.*`` and renames it into place only when it is
complete, so a killed build never looks prepared; an exclusive file lock per dataset makes
concurrent processes wait for one build instead of racing, and lets the winner delete the
half-written leftovers of killed builds.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lopt_cli.errors import LoptUserError

try:  # POSIX; elsewhere TFDS's atomic rename alone guards against torn builds.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)
LOCK_DIR = ".lopt-locks"


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
    """Silences TFDS's absl logging, progress bars, PIL's decoder chatter and Python warnings."""
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging
    from tensorflow_datasets.core.utils import tqdm_utils

    verbosity = absl_logging.get_verbosity()
    progress = getattr(tqdm_utils, "_active", True)
    pil_logger = logging.getLogger("PIL")
    pil_level = pil_logger.level
    absl_logging.set_verbosity(absl_logging.ERROR)
    tfds.display_progress_bar(False)
    pil_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        absl_logging.set_verbosity(verbosity)
        tfds.display_progress_bar(progress)
        pil_logger.setLevel(pil_level)


def is_prepared(version_dir: Path) -> bool:
    """Whether a TFDS build was completed (and renamed into place) at ``version_dir``."""
    return (version_dir / "dataset_info.json").is_file()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock held while the block runs (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_partial(version_dir: Path) -> None:
    """Deletes leftovers of killed builds (call only under the lock).

    These are TFDS's ``incomplete.*`` folders and a version folder without
    ``dataset_info.json`` (which TFDS would otherwise "reuse" as if it were complete).
    """
    for leftover in version_dir.parent.glob("incomplete.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if version_dir.exists() and not is_prepared(version_dir):
        shutil.rmtree(version_dir)


def prepare(builder_cls: type, data_dir: Path) -> Path:
    """Builds ``builder_cls`` into ``data_dir`` unless already built; returns its version dir.

    Never downloads: the builders generate their data locally. Safe to call from several
    processes at once.
    """
    version_dir = data_dir / builder_cls.name / str(builder_cls.VERSION)
    if is_prepared(version_dir):
        return version_dir
    try:
        with file_lock(data_dir / LOCK_DIR / f"{builder_cls.name}.lock"):
            if is_prepared(version_dir):  # another process built it while we waited
                return version_dir
            remove_partial(version_dir)
            logger.info("Building dataset %s into %s", builder_cls.name, data_dir)
            with quiet_tfds(), tempfile.TemporaryDirectory(prefix="lopt-dl-") as scratch:
                builder = builder_cls(data_dir=os.fspath(data_dir), file_format="array_record")
                builder.download_and_prepare(download_dir=scratch)
    except OSError as error:
        raise LoptUserError(
            f"cannot build dataset {builder_cls.name!r} in {data_dir}: {error}; "
            "set LOPT_DATA_DIR to a writable directory") from None
    return version_dir


def describe_error(error: BaseException, limit: int = 200) -> str:
    """``"Type: message"`` on one line, shortened: for one-line user errors."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:limit]}"


def stack_records(records: Sequence[dict]) -> dict[str, np.ndarray]:
    """Turns a list of decoded examples (flat dicts) into one array per feature."""
    if not records:
        return {}
    return {key: np.stack([np.asarray(r[key]) for r in records]) for key in records[0]}


def read_source(source) -> dict[str, np.ndarray]:
    """Every record of a TFDS random-access data source, read in one vectorised call."""
    return stack_records(source.__getitems__(list(range(len(source)))))


def open_builder(version_dir: Path):
    """A read-only TFDS builder for the prepared dataset in ``version_dir`` (no registry)."""
    import tensorflow_datasets as tfds

    with quiet_tfds():
        return tfds.builder_from_directory(os.fspath(version_dir))


def read_splits(builder, splits: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {feature: array}}`` for the given splits of a prepared ``array_record`` build."""
    with quiet_tfds():
        sources = builder.as_data_source(split=list(splits))
        return {split: read_source(source) for split, source in zip(splits, sources)}
