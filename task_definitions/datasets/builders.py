"""TFDS builders for the built-in datasets, generated offline and stored as ``array_record``.

Each builder is a thin ``GeneratorBasedBuilder`` around a pure generator from
:mod:`task_definitions.datasets.generators`: it declares the features and writes the arrays, one
record per example, in the order the generator gives them (shuffling is disabled; the split
itself is seeded). Nothing is ever downloaded and no TensorFlow is needed: build with
``download_and_prepare(file_format="array_record")`` and read with ``as_data_source()``.

>>> from task_definitions.datasets.builders import LoptDigits
>>> builder = LoptDigits(data_dir="/tmp/tfds", file_format="array_record")  # doctest: +SKIP
>>> builder.download_and_prepare()  # doctest: +SKIP
>>> builder.as_data_source()["train"][0]["image"].shape  # doctest: +SKIP
(8, 8)
"""
from __future__ import annotations

import hashlib
import logging
import platform
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from task_definitions.datasets import generators as gen

logger = logging.getLogger(__name__)


class OfflineDatasetInfo(tfds.core.DatasetInfo):
    """``DatasetInfo`` that never looks for pre-computed metadata on GCS."""

    def initialize_from_bucket(self) -> None:
        """No-op: these datasets exist only locally (and the stock method leaks a temp dir)."""


class ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: writes the split arrays returned by :meth:`split_arrays`, one record each."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    DESCRIPTION = ""

    def features(self) -> dict[str, tfds.features.FeatureConnector]:
        """The feature connectors of one example."""
        raise NotImplementedError

    def split_arrays(self) -> gen.Splits:
        """``{split: {feature: array}}`` with a leading example axis."""
        raise NotImplementedError

    def description(self) -> str:
        """Human-readable provenance, stored in ``dataset_info.json``."""
        return self.DESCRIPTION

    def _info(self) -> tfds.core.DatasetInfo:
        return OfflineDatasetInfo(
            builder=self,
            description=self.description(),
            features=tfds.features.FeaturesDict(self.features()),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):  # nothing to download
        return {name: self._generate_examples(arrays)
                for name, arrays in self.split_arrays().items()}

    def _generate_examples(self, arrays: dict[str, np.ndarray]):
        count = len(next(iter(arrays.values())))
        for index in range(count):
            yield index, {key: value[index] for key, value in arrays.items()}

    # TFDS prints these two messages to stdout; keep the CLI output clean.
    def _log_download_bytes(self) -> None:
        logger.debug("Generating %s into %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        logger.debug("Generated %s in %s", self.name, self.data_dir)


def _label(num_classes: int) -> tfds.features.ClassLabel:
    return tfds.features.ClassLabel(num_classes=num_classes)


class LoptDigits(ArrayBuilder):
    """scikit-learn's 8x8 digits: ``image`` float32 (8, 8) in [0, 1], ``label`` (10 classes)."""

    name = "lopt_digits"
    DESCRIPTION = ("UCI/scikit-learn 8x8 handwritten digits (1797 images), pixel values / 16, "
                   "seeded 60/20/20 split into train/valid/test.")

    def features(self):
        return {"image": tfds.features.Tensor(shape=(8, 8), dtype=np.float32),
                "label": _label(10)}

    def split_arrays(self):
        return gen.digits_splits()


class LoptMnist1d(ArrayBuilder):
    """Procedural MNIST-1D: ``x`` float32 (40,), ``label`` (10 classes); 5000/1000/1000."""

    name = "lopt_mnist1d"
    DESCRIPTION = ("MNIST-1D (after Greydanus 2020): ten 1-D templates padded, dilated, scaled, "
                   "shifted, with correlated background noise, iid noise and shear, resampled "
                   "to length 40; generated from a fixed seed.")

    def features(self):
        return {"x": tfds.features.Tensor(shape=(gen.MNIST1D_LENGTH,), dtype=np.float32),
                "label": _label(10)}

    def split_arrays(self):
        return gen.mnist1d_splits()


class LoptText(ArrayBuilder):
    """Bytes of CPython stdlib source: ``tokens`` int32 (65,), vocabulary 256."""

    name = "lopt_text"

    def description(self) -> str:
        digest = hashlib.sha256(gen.stdlib_corpus()).hexdigest()[:16]
        return (f"Byte-level (vocab {gen.TEXT_VOCAB_SIZE}) non-overlapping sequences of "
                f"{gen.TEXT_SEQ_LEN} tokens cut from {len(gen.TEXT_STDLIB_FILES)} CPython "
                f"stdlib modules (built with Python {platform.python_version()}, corpus "
                f"sha256 {digest}...), seeded split.")

    def features(self):
        return {"tokens": tfds.features.Tensor(shape=(gen.TEXT_SEQ_LEN,), dtype=np.int32)}

    def split_arrays(self):
        return gen.text_splits()


class LoptSynthetic(ArrayBuilder):
    """Gaussian-mixture classification: ``x`` float32 (16,), ``label`` (4 classes)."""

    name = "lopt_synthetic"
    DESCRIPTION = ("Four classes, each a mixture of three anisotropic Gaussian clusters in 16 "
                   "dimensions; 4000/1000/1000 examples from a fixed seed.")

    def features(self):
        return {"x": tfds.features.Tensor(shape=(gen.SYNTHETIC_DIM,), dtype=np.float32),
                "label": _label(gen.SYNTHETIC_CLASSES)}

    def split_arrays(self):
        return gen.synthetic_splits()


BUILDERS: dict[str, type[ArrayBuilder]] = {
    "digits": LoptDigits,
    "mnist1d": LoptMnist1d,
    "text": LoptText,
    "synthetic": LoptSynthetic,
}
