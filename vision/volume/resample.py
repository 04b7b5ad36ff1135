"""Resampling volumes between grids (scipy.ndimage), for [D, H, W] and [K, D, H, W] arrays.

The grids are aligned at their outer edges (scipy's `grid_mode=True`): a volume of n voxels of
spacing s spans n * s mm before and after, so physical sizes (and mask volumes) are kept.
Use `order=0` for labels, 1 (linear) for probabilities, 1 or 3 for intensities; order 1 is the
separable float32 `vision.volume.labels.resample_linear` (the same values as scipy's, faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from vision.errors import InvalidInputError
from vision.volume.labels import resample_linear


def resampled_shape(
    shape: Sequence[int], spacing_from: Sequence[float], spacing_to: Sequence[float]
) -> tuple[int, int, int]:
    """The (D, H, W) of a grid of `shape` at `spacing_from` resampled to `spacing_to`."""
    sizes = [
        max(1, round(int(n) * float(a) / float(b)))
        for n, a, b in zip(shape, spacing_from, spacing_to, strict=True)
    ]
    return sizes[0], sizes[1], sizes[2]


def _zoom3(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    if tuple(array.shape) == tuple(shape):
        return array.copy()
    factors = [int(t) / int(s) for t, s in zip(shape, array.shape, strict=True)]
    source = array if order == 0 else array.astype(np.float32, copy=False)
    out = ndimage.zoom(source, factors, order=order, mode="nearest", grid_mode=True)
    if tuple(out.shape) != tuple(shape):  # zoom rounds the shape; never off by more than one
        out = out[tuple(slice(0, int(n)) for n in shape)]
    return out


def resample_to_shape(array: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """`array` [D, H, W] or channels-first [K, D, H, W] resampled to spatial `shape` (D, H, W).

    Order 0 keeps the dtype (labels); other orders give float32.
    """
    if order not in (0, 1, 2, 3, 4, 5):
        raise InvalidInputError(f"resample order {order}: use 0 (labels), 1 or 3")
    if len(shape) != 3 or min(int(s) for s in shape) < 1:
        raise InvalidInputError(f"resample: three positive sizes (D, H, W), got {shape}")
    if order == 1 and array.ndim in (3, 4):
        return resample_linear(array, shape)
    if array.ndim == 3:
        return _zoom3(array, shape, order)
    if array.ndim == 4:
        return np.stack([_zoom3(channel, shape, order) for channel in array])
    raise InvalidInputError(f"resample: a [D, H, W] or [K, D, H, W] array, got {array.shape}")


def resample(
    voxels: np.ndarray,
    spacing_from: Sequence[float],
    spacing_to: Sequence[float],
    order: int = 1,
) -> np.ndarray:
    """`voxels` ([D, H, W] or [K, D, H, W]) from `spacing_from` to `spacing_to` (z, y, x mm)."""
    shape = resampled_shape(voxels.shape[-3:], spacing_from, spacing_to)
    return resample_to_shape(voxels, shape, order)
