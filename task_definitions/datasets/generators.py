"""Pure NumPy generators for the built-in datasets: fixed seed in, split arrays out.

Each ``*_splits()`` function returns ``{"train": {...}, "valid": {...}, "test": {...}}``, every
split a dict of equally long arrays. They are deterministic (a fixed ``numpy.random`` seed and
no other source of randomness) and never touch the network; the TFDS builders in
:mod:`task_definitions.datasets.builders` only write these arrays to ``array_record`` files.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

from task_definitions.base import SPLITS

Splits = dict[str, dict[str, np.ndarray]]

TEXT_SEQ_LEN = 65  # 64 inputs + 1 shifted target
TEXT_VOCAB_SIZE = 256  # raw UTF-8 bytes
TEXT_SPLIT_SIZES = (9600, 1200, 1200)
# Well-known stdlib modules present on every CPython >= 3.11 (sorted; ``pathlib.py`` is avoided
# because it became a package in 3.13). Their text may differ between Python releases.
TEXT_STDLIB_FILES = (
    "abc.py", "argparse.py", "base64.py", "bisect.py", "calendar.py", "collections/__init__.py",
    "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "difflib.py", "enum.py",
    "fractions.py", "functools.py", "heapq.py", "json/decoder.py", "json/encoder.py",
    "operator.py", "pprint.py", "random.py", "shlex.py", "statistics.py", "string.py",
    "textwrap.py", "types.py", "typing.py", "weakref.py",
)

MNIST1D_LENGTH = 40
MNIST1D_SPLIT_SIZES = (5000, 1000, 1000)

SYNTHETIC_DIM = 16
SYNTHETIC_CLASSES = 4
SYNTHETIC_SPLIT_SIZES = (4000, 1000, 1000)


def split_by_sizes(arrays: dict[str, np.ndarray], sizes: tuple[int, int, int]) -> Splits:
    """Cuts equally long ``arrays`` into consecutive train / valid / test blocks of ``sizes``."""
    bounds = np.cumsum((0, *sizes))
    return {
        split: {key: value[bounds[i]:bounds[i + 1]] for key, value in arrays.items()}
        for i, split in enumerate(SPLITS)
    }


# --------------------------------------------------------------------------- digits


def digits_splits(seed: int = 0) -> Splits:
    """scikit-learn's bundled 8x8 digits in [0, 1], seeded 60/20/20 split (1078/359/360)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    n = len(order)
    n_train, n_valid = int(0.6 * n), int(0.2 * n)
    arrays = {
        "image": (digits.images[order] / 16.0).astype(np.float32),
        "label": digits.target[order].astype(np.int64),
    }
    return split_by_sizes(arrays, (n_train, n_valid, n - n_train - n_valid))


# --------------------------------------------------------------------------- MNIST-1D

# Ten hand-drawn 1-D "digit" strokes of 12 points (after Greydanus 2020, arXiv 2011.14439).
_MNIST1D_TEMPLATES = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
])


def mnist1d_templates() -> np.ndarray:
    """The ten templates, standardised, shifted to start at 0 and scaled down (10, 12)."""
    t = _MNIST1D_TEMPLATES - _MNIST1D_TEMPLATES.mean(1, keepdims=True)
    t = t / t.std(1, keepdims=True)
    return (t - t[:, :1]) / 6.0


def resample_rows(x: np.ndarray, lengths: np.ndarray, out_len: int) -> np.ndarray:
    """Linearly resamples row ``i``'s first ``lengths[i]`` entries onto ``out_len`` points."""
    pos = np.linspace(0.0, 1.0, out_len)[None, :] * (lengths[:, None] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, lengths[:, None] - 1)
    frac = pos - lo
    rows = np.arange(len(x))[:, None]
    return (1.0 - frac) * x[rows, lo] + frac * x[rows, hi]


def smooth_rows(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along the last axis with reflected borders."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, ((0, 0), (radius, radius)), mode="symmetric")
    n = x.shape[1]
    return sum(w * padded[:, i:i + n] for i, w in enumerate(kernel))


def mnist1d_examples(
    num: int, rng: np.random.Generator, padding: tuple[int, int] = (36, 60),
    max_shift: int = 48, scale_coeff: float = 0.4, corr_noise: float = 0.25,
    iid_noise: float = 0.02, shear_scale: float = 0.75, length: int = MNIST1D_LENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` MNIST-1D examples: pad, dilate, scale, shift, noise the background, shear, resample.

    Returns ``(x float32 [num, length], label int64 [num])`` with balanced, shuffled labels.
    """
    templates = mnist1d_templates() + 1e-8  # nonzero, so the zero padding marks the background
    tlen, width = templates.shape[1], templates.shape[1] + padding[1]
    labels = rng.permutation(np.arange(num) % len(templates))
    canvas = np.zeros((num, width))
    canvas[:, :tlen] = templates[labels]
    pads = rng.integers(padding[0], padding[1] + 1, size=num)
    x = resample_rows(canvas, tlen + pads, width)  # pad, then dilate back to ``width``
    x *= 1.0 + scale_coeff * (rng.random((num, 1)) - 0.5)
    shifts = rng.integers(0, max_shift, size=num)
    x = np.take_along_axis(x, (np.arange(width)[None, :] - shifts[:, None]) % width, axis=1)
    noise = smooth_rows(corr_noise * rng.standard_normal((num, width)), sigma=2.0)
    x = np.where(x != 0, x, noise) + iid_noise * rng.standard_normal((num, width))
    x -= shear_scale * (rng.random((num, 1)) - 0.5) * np.linspace(-0.5, 0.5, width)[None, :]
    x = resample_rows(x, np.full(num, width), length)
    return x.astype(np.float32), labels.astype(np.int64)


def mnist1d_splits(seed: int = 42) -> Splits:
    """Procedural MNIST-1D: 5000 / 1000 / 1000 independent examples of length 40."""
    x, label = mnist1d_examples(sum(MNIST1D_SPLIT_SIZES), np.random.default_rng(seed))
    return split_by_sizes({"x": x, "label": label}, MNIST1D_SPLIT_SIZES)


# --------------------------------------------------------------------------- text


def stdlib_corpus(files: tuple[str, ...] = TEXT_STDLIB_FILES) -> bytes:
    """UTF-8 bytes of the given stdlib files (those that exist), concatenated in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [root / name for name in sorted(files)]
    return b"\n".join(path.read_bytes() for path in paths if path.is_file())


def text_splits(seed: int = 0, corpus: bytes | None = None) -> Splits:
    """Byte-level sequences (int32 [n, 65]) of stdlib source, non-overlapping, seeded split."""
    corpus = stdlib_corpus() if corpus is None else corpus
    num = sum(TEXT_SPLIT_SIZES)
    if len(corpus) < num * TEXT_SEQ_LEN:
        raise RuntimeError(
            f"stdlib text corpus too small: {len(corpus)} bytes < {num * TEXT_SEQ_LEN}")
    tokens = np.frombuffer(corpus[:num * TEXT_SEQ_LEN], dtype=np.uint8).astype(np.int32)
    sequences = tokens.reshape(num, TEXT_SEQ_LEN)
    order = np.random.default_rng(seed).permutation(num)
    return split_by_sizes({"tokens": sequences[order]}, TEXT_SPLIT_SIZES)


# --------------------------------------------------------------------------- synthetic


def synthetic_splits(
    seed: int = 0, dim: int = SYNTHETIC_DIM, num_classes: int = SYNTHETIC_CLASSES,
    clusters_per_class: int = 3, separation: float = 0.5,
) -> Splits:
    """Gaussian-mixture classification: each class is a mixture of anisotropic clusters.

    With the defaults a linear model reaches about 67 % test accuracy and a 64-64 MLP about 95 %.
    """
    rng = np.random.default_rng(seed)
    num = sum(SYNTHETIC_SPLIT_SIZES)
    centres = separation * rng.standard_normal((num_classes, clusters_per_class, dim))
    mixing = rng.standard_normal((num_classes, clusters_per_class, dim, dim)) / np.sqrt(2 * dim)
    labels = rng.permutation(np.arange(num) % num_classes)
    cluster = rng.integers(0, clusters_per_class, size=num)
    z = rng.standard_normal((num, dim))
    x = centres[labels, cluster] + np.einsum("nd,nde->ne", z, mixing[labels, cluster])
    arrays = {"x": x.astype(np.float32), "label": labels.astype(np.int64)}
    return split_by_sizes(arrays, SYNTHETIC_SPLIT_SIZES)
