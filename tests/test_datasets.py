"""Offline dataset builders: shapes, splits, determinism, caching, robustness and errors."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lopt_cli.errors import LoptUserError
from task_definitions.datasets import (
    BUILTIN_DATASETS,
    TEXT_SEQ_LEN,
    default_data_dir,
    load_arrays,
    vocab_size,
)
from task_definitions.datasets import generators as gen

REPO = Path(__file__).resolve().parent.parent
SPLITS = ("train", "valid", "test")

# name -> {feature: (per-example shape, dtype)}, and the split sizes
SPECS = {
    "digits": ({"image": ((8, 8), np.float32), "label": ((), np.int64)}, (1078, 359, 360)),
    "mnist1d": ({"x": ((40,), np.float32), "label": ((), np.int64)}, (5000, 1000, 1000)),
    "text": ({"tokens": ((TEXT_SEQ_LEN,), np.int32)}, (9600, 1200, 1200)),
    "synthetic": ({"x": ((16,), np.float32), "label": ((), np.int64)}, (4000, 1000, 1000)),
}
NUM_CLASSES = {"digits": 10, "mnist1d": 10, "synthetic": 4}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One clean data directory shared by the tests of this module."""
    return tmp_path_factory.mktemp("tfds")


def rows(array: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in array.reshape(len(array), -1)}


def sorted_rows(array: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() for row in array.reshape(len(array), -1))


def test_builtin_names_match_the_specs():
    assert set(BUILTIN_DATASETS) == set(SPECS)


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builds_with_documented_shapes_dtypes_and_splits(name, data_dir):
    splits = load_arrays(name, data_dir)
    features, sizes = SPECS[name]
    assert tuple(splits) == SPLITS
    for split, size in zip(SPLITS, sizes):
        assert set(splits[split]) == set(features)
        for key, (shape, dtype) in features.items():
            array = splits[split][key]
            assert array.shape == (size, *shape), (split, key)
            assert array.dtype == dtype, (split, key)
            assert np.all(np.isfinite(array))
        if "label" in features:
            labels = splits[split]["label"]
            assert labels.min() >= 0 and labels.max() < NUM_CLASSES[name]
    assert (data_dir / f"lopt_{name}" / "1.0.0" / "dataset_info.json").is_file()
    assert list(data_dir.glob(f"lopt_{name}/*.array_record*")) == []
    assert len(list(data_dir.glob(f"lopt_{name}/1.0.0/*.array_record-*"))) == 3


def test_value_ranges_and_class_balance(data_dir):
    digits = load_arrays("digits", data_dir)["train"]["image"]
    assert digits.min() == 0.0 and digits.max() == 1.0
    tokens = load_arrays("text", data_dir)["train"]["tokens"]
    assert tokens.min() >= 0 and tokens.max() < vocab_size("text") == 256
    for name in ("mnist1d", "synthetic"):
        counts = np.bincount(load_arrays(name, data_dir)["train"]["label"])
        assert counts.min() > 0.8 * counts.max(), (name, counts)


@pytest.mark.parametrize("name", ["mnist1d", "synthetic"])
def test_continuous_splits_are_disjoint(name, data_dir):
    splits = load_arrays(name, data_dir)
    train, valid, test = (rows(splits[s]["x"]) for s in SPLITS)
    assert len(train) == len(splits["train"]["x"])  # no duplicates within train either
    assert not train & valid and not train & test and not valid & test


def test_digits_splits_partition_the_sklearn_digits(data_dir):
    from sklearn.datasets import load_digits

    splits = load_arrays("digits", data_dir)
    ours = np.concatenate([splits[s]["image"] for s in SPLITS])
    theirs = (load_digits().images / 16.0).astype(np.float32)
    assert sorted_rows(ours) == sorted_rows(theirs)


def test_text_splits_partition_the_corpus_into_non_overlapping_sequences(data_dir):
    splits = load_arrays("text", data_dir)
    ours = np.concatenate([splits[s]["tokens"] for s in SPLITS])
    corpus = np.frombuffer(gen.stdlib_corpus()[:ours.size], np.uint8).astype(np.int32)
    assert sorted_rows(ours) == sorted_rows(corpus.reshape(ours.shape))


def test_second_build_in_another_directory_is_identical(data_dir, tmp_path):
    for name in BUILTIN_DATASETS:
        first, second = load_arrays(name, data_dir), load_arrays(name, tmp_path)
        for split in SPLITS:
            for key in first[split]:
                np.testing.assert_array_equal(first[split][key], second[split][key])


def test_loading_twice_is_cached_equal_and_read_only(data_dir):
    first = load_arrays("digits", data_dir)
    start = time.perf_counter()
    second = load_arrays("digits", str(data_dir))
    assert time.perf_counter() - start < 0.01
    assert first is not second  # fresh dicts: callers cannot corrupt the cache ...
    assert second["train"]["image"] is first["train"]["image"]  # ... around shared arrays
    with pytest.raises(ValueError):
        first["train"]["image"][0, 0, 0] = 1.0
    first["train"].clear()
    assert load_arrays("digits", data_dir)["train"]["label"].shape == (1078,)


def test_lopt_prefixed_names_are_aliases(data_dir):
    np.testing.assert_array_equal(load_arrays("lopt_synthetic", data_dir)["test"]["x"],
                                  load_arrays("synthetic", data_dir)["test"]["x"])


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    load_arrays("synthetic")
    assert (tmp_path / "elsewhere" / "lopt_synthetic" / "1.0.0").is_dir()
    monkeypatch.delenv("LOPT_DATA_DIR")
    assert default_data_dir() == Path.home() / ".cache" / "lopt" / "tensorflow_datasets"


def test_leftovers_of_a_killed_build_are_never_read(tmp_path):
    dataset_dir = tmp_path / "lopt_digits"
    stale = dataset_dir / "incomplete.ABC123_1.0.0"
    stale.mkdir(parents=True)
    (stale / "dataset_info.json").write_text("{}")
    torn = dataset_dir / "1.0.0"  # a version folder without dataset_info.json
    torn.mkdir()
    (torn / "lopt_digits-train.array_record-00000-of-00001").write_bytes(b"garbage")
    splits = load_arrays("digits", tmp_path)
    assert splits["test"]["image"].shape == (360, 8, 8)
    assert not stale.exists()
    assert sorted(p.name for p in dataset_dir.iterdir()) == ["1.0.0"]


def test_unknown_name_lists_the_builtin_datasets(tmp_path):
    for bad in ("not_a_dataset", "../etc", "Digits!"):
        with pytest.raises(LoptUserError) as info:
            load_arrays(bad, tmp_path)
        message = str(info.value)
        assert "\n" not in message and repr(bad) in message
        assert all(name in message for name in BUILTIN_DATASETS)


def test_missing_catalog_dataset_fails_fast_without_network(tmp_path):
    start = time.perf_counter()
    with pytest.raises(LoptUserError) as info:
        load_arrays("mnist", tmp_path)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert "not available offline" in message and str(tmp_path) in message
    assert "tfds build mnist" in message and "LOPT_DATA_DIR" in message
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing half-written


def _fake_catalog_dataset(data_dir: Path, file_format: str = "array_record") -> Path:
    """Prepares a tiny stand-in for TFDS ``mnist`` (PNG images, train/test) in ``data_dir``."""
    image_module = pytest.importorskip("PIL.Image")
    import tensorflow_datasets as tfds

    from task_definitions.datasets.builders import OfflineDatasetInfo

    class FakeMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "mnist"
        VERSION = tfds.core.Version("3.0.1")

        def _info(self):
            features = {"image": tfds.features.Image(shape=(28, 28, 1)),
                        "label": tfds.features.ClassLabel(num_classes=10)}
            return OfflineDatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                      supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(50, 0), "test": self._generate_examples(8, 1)}

        def _generate_examples(self, count, seed):
            rng = np.random.default_rng(seed)
            for i in range(count):
                pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
                yield i, {"image": image_module.fromarray(pixels), "label": i % 10}

    from task_definitions.datasets.storage import quiet_tfds

    with quiet_tfds():
        FakeMnist(data_dir=str(data_dir), file_format=file_format).download_and_prepare(
            download_dir=str(data_dir / "scratch"))
    return data_dir / "mnist" / "3.0.1"


def test_prepared_catalog_dataset_is_mapped_to_lopt_splits(tmp_path):
    _fake_catalog_dataset(tmp_path)
    splits = load_arrays("mnist", tmp_path)
    assert {s: len(splits[s]["label"]) for s in SPLITS} == {"train": 45, "valid": 5, "test": 8}
    image = splits["train"]["image"]
    assert image.shape == (45, 28, 28, 1) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.9
    assert splits["test"]["label"].dtype == np.int64
    assert load_arrays("mnist:3.0.1", tmp_path)["valid"]["label"].shape == (5,)


def test_catalog_dataset_in_tfrecord_format_gets_a_clear_error(tmp_path):
    version_dir = _fake_catalog_dataset(tmp_path)
    info_path = version_dir / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"  # as `tfds build` writes by default
    info_path.write_text(json.dumps(info))
    with pytest.raises(LoptUserError, match="--file_format=array_record"):
        load_arrays("mnist", tmp_path)


def test_concurrent_first_builds_agree_quietly_without_tensorflow(tmp_path, data_dir):
    script = (
        "import hashlib, sys\n"
        "from task_definitions.datasets import load_arrays\n"
        f"a = load_arrays('synthetic', {str(tmp_path)!r})\n"
        "print(hashlib.sha256(a['train']['x'].tobytes()).hexdigest(), 'tensorflow' in sys.modules)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), results
    lines = {out for out, _ in results}
    assert len(lines) == 1, results  # same data, and nothing but our line on stdout
    digest, tf_loaded = lines.pop().split()
    assert tf_loaded == "False"
    expected = hashlib.sha256(load_arrays("synthetic", data_dir)["train"]["x"].tobytes())
    assert digest == expected.hexdigest()
    assert all("Generating" not in err and "Downloading" not in err for _, err in results)
