"""Image arrays made small: resizing (antialiased) and conversion to one grey channel.

Celo-style tasks train MLPs on 8×8 versions of MNIST, Fashion-MNIST, CIFAR-10 or SVHN; these
helpers turn a dataset's ``[n, H, W]`` or ``[n, H, W, C]`` images into that form once, at build
time, in chunks so that a 70k-image dataset never needs more than a few hundred MB at once.
"""
from __future__ import annotations

import jax
import numpy as np

# ITU-R BT.601 luma weights (what PIL's "L" mode uses)
LUMA_WEIGHTS = np.asarray([0.299, 0.587, 0.114], np.float32)
CHUNK = 8192


def with_channels(images: np.ndarray) -> np.ndarray:
    """``[n, H, W]`` images as ``[n, H, W, 1]``; ``[n, H, W, C]`` unchanged (as float32)."""
    images = np.asarray(images, np.float32)
    return images[..., None] if images.ndim == 3 else images


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """``[n, H, W, C]`` resized to ``[n, size, size, C]`` by ``jax.image.resize`` (bilinear,
    antialiased when shrinking, so that 28→8 averages areas); unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    parts = [np.asarray(jax.image.resize(chunk, (len(chunk), size, size, chunk.shape[-1]),
                                         method="linear"), np.float32)
             for chunk in np.array_split(images, max(1, -(-len(images) // CHUNK)))]
    return np.concatenate(parts)


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """``[n, H, W, 3]`` RGB to ``[n, H, W, 1]`` luma; one-channel images unchanged."""
    if images.shape[-1] == 1:
        return images
    if images.shape[-1] != 3:
        raise ValueError(f"cannot convert {images.shape[-1]}-channel images to grayscale")
    return (images @ LUMA_WEIGHTS)[..., None]


def small_images(images: np.ndarray, size: int = 0, grayscale: bool = False) -> np.ndarray:
    """``[n, H, W(, C)]`` images as ``[n, size, size, C']`` float32 (``size=0``: as they are;
    ``C' = 1`` with ``grayscale``). Grey conversion comes first: it is linear, so it commutes with
    the resize and makes it three times cheaper."""
    images = with_channels(images)
    if grayscale:
        images = to_grayscale(images)
    return resize_images(images, size) if size else images
