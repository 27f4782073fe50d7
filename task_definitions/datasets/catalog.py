"""TFDS catalog datasets (mnist, cifar10, ...) that the user prepared locally as ``array_record``.

lopt never downloads: a catalog dataset is read only if ``<data_dir>/<name>[/<config>]/<version>``
already holds a completed ``array_record`` build. Splits are mapped onto train / valid / test
(``valid`` is the dataset's validation split, else the last 10 % of ``train``) and features onto
``image`` (float32 in [0, 1], HWC) or ``x`` (float32) plus ``label`` (int64).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lopt_cli.errors import LoptUserError
from task_definitions.datasets import storage

NAME_RE = re.compile(
    r"^(?P<name>[a-z][a-z0-9_]*)(?:/(?P<config>[A-Za-z0-9_.\-]+))?(?::(?P<version>\d+\.\d+\.\d+))?$")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
VALID_ALIASES = ("validation", "valid", "val", "dev")
VALID_FRACTION = 0.1

# lopt split -> (source split, start fraction, end fraction)
SplitPlan = dict[str, tuple[str, float, float]]


def parse_name(spec: str) -> tuple[str, str | None, str | None] | None:
    """``"name[/config][:x.y.z]"`` -> ``(name, config, version)``; ``None`` if malformed."""
    match = NAME_RE.match(spec)
    return None if match is None else (match["name"], match["config"], match["version"])


def catalog_names() -> frozenset[str]:
    """Names of the datasets in the installed TFDS catalog (no network)."""
    import tensorflow_datasets as tfds

    with storage.quiet_tfds():
        return frozenset(tfds.list_builders(with_community_datasets=False))


def _version_key(version_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in version_dir.name.split("."))


def _completed_versions(root: Path, pattern: str) -> list[Path]:
    return [info.parent for info in root.glob(pattern)
            if VERSION_RE.match(info.parent.name) and storage.is_prepared(info.parent)]


def find_prepared(data_dir: Path, name: str, config: str | None, version: str | None,
                  ) -> Path | None:
    """The newest completed build of ``name`` (optionally ``config`` / ``version``), if any."""
    root = data_dir / name
    if config is not None:
        candidates = _completed_versions(root / config, "*/dataset_info.json")
    else:
        candidates = (_completed_versions(root, "*/dataset_info.json")
                      or _completed_versions(root, "*/*/dataset_info.json"))
    if version is not None:
        candidates = [c for c in candidates if c.name == version]
    configs = sorted({c.parent.name for c in candidates if c.parent != root})
    if config is None and len(configs) > 1:
        raise LoptUserError(
            f"dataset {name!r} has several prepared configs in {root} ({', '.join(configs)}); "
            f"name one, e.g. {name}/{configs[0]}")
    return max(candidates, key=_version_key, default=None)


def not_offline_message(spec: str, data_dir: Path) -> str:
    """One line: ``spec`` is not prepared in ``data_dir``, and how to provide it."""
    name = spec.split(":")[0].split("/")[0]
    return (
        f"dataset {spec!r} is not available offline: no prepared array_record copy found in "
        f"{data_dir / name} (lopt never downloads); on a machine with internet run "
        f"`tfds build {spec} --data_dir DIR --file_format=array_record`"
        f" and copy DIR/{name} into {data_dir}, or set LOPT_DATA_DIR to a directory holding it")


def split_plan(available: list[str], valid_fraction: float = VALID_FRACTION) -> SplitPlan:
    """Maps a dataset's split names onto lopt's train / valid / test."""
    if "train" not in available:
        raise LoptUserError(f"dataset has no 'train' split (splits: {', '.join(available)})")
    valid = next((s for s in VALID_ALIASES if s in available), None)
    test = "test" if "test" in available else None
    if test is None and valid is not None:
        test, valid = valid, None
    cut = 1.0 - valid_fraction
    if test is None:
        cut2 = 1.0 - 2 * valid_fraction
        return {"train": ("train", 0.0, cut2), "valid": ("train", cut2, cut),
                "test": ("train", cut, 1.0)}
    if valid is None:
        return {"train": ("train", 0.0, cut), "valid": ("train", cut, 1.0),
                "test": (test, 0.0, 1.0)}
    return {"train": ("train", 0.0, 1.0), "valid": (valid, 0.0, 1.0), "test": (test, 0.0, 1.0)}


def feature_keys(info) -> tuple[str, str]:
    """The (input, label) feature names: TFDS ``supervised_keys``, else image / label."""
    keys = info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    if "image" in info.features and "label" in info.features:
        return "image", "label"
    raise LoptUserError(
        f"dataset {info.name!r} has no (input, label) features lopt can use "
        f"(features: {', '.join(info.features.keys())})")


def to_lopt_features(arrays: dict[str, np.ndarray], info) -> dict[str, np.ndarray]:
    """``image`` (float32 in [0, 1]) or ``x`` (float32), plus ``label`` (int64)."""
    import tensorflow_datasets as tfds

    input_key, label_key = feature_keys(info)
    inputs = arrays[input_key]
    if isinstance(info.features[input_key], tfds.features.Image):
        scale = 255.0 if inputs.dtype == np.uint8 else 1.0
        out = {"image": inputs.astype(np.float32) / np.float32(scale)}
    else:
        out = {"x": inputs.astype(np.float32)}
    out["label"] = arrays[label_key].astype(np.int64)
    return out


def _slice(arrays: dict[str, np.ndarray], start: float, stop: float) -> dict[str, np.ndarray]:
    n = len(next(iter(arrays.values())))
    lo, hi = round(start * n), round(stop * n)
    return {key: value[lo:hi] for key, value in arrays.items()}


def stored_formats(info) -> set[str]:
    """File formats the prepared dataset is stored in (e.g. ``{"tfrecord"}``)."""
    formats = {info.file_format, *info.available_file_formats()}
    return {str(getattr(f, "value", f)) for f in formats if f is not None}


def load_prepared(version_dir: Path, spec: str) -> dict[str, dict[str, np.ndarray]]:
    """Reads a prepared catalog dataset and maps it onto lopt's splits and features."""
    try:
        return _read_prepared(version_dir, spec)
    except LoptUserError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged or partial copy, reported in one line
        raise LoptUserError(
            f"cannot read dataset {spec!r} from {version_dir} ({storage.describe_error(error)}); "
            "copy or prepare it again") from None


def _read_prepared(version_dir: Path, spec: str) -> dict[str, dict[str, np.ndarray]]:
    builder = storage.open_builder(version_dir)
    formats = stored_formats(builder.info)
    if "array_record" not in formats:
        raise LoptUserError(
            f"dataset {spec!r} in {version_dir} is stored as {', '.join(sorted(formats))}, which "
            "lopt cannot read without TensorFlow; re-prepare it with `tfds build "
            f"{spec} --data_dir DIR --file_format=array_record` and copy it there")
    plan = split_plan(list(builder.info.splits.keys()))
    sources = sorted({source for source, _, _ in plan.values()})
    raw = storage.read_splits(builder, sources)
    return {split: to_lopt_features(_slice(raw[source], lo, hi), builder.info)
            for split, (source, lo, hi) in plan.items()}
