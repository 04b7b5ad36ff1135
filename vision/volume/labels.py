"""Cheap linear resampling in float32, and exact labels of linearly resampled probabilities.

`resample_linear` is scipy's `ndimage.zoom(order=1, mode="nearest", grid_mode=True)` done
separably, one axis at a time in float32 (two gathers and a multiply-add per axis; axes that
keep their size are skipped, shrinking axes go first).

`upsampled_labels` gives what thresholding or the argmax of the probabilities linearly
resampled to the original grid gives, without resampling them: each output voxel lies in a
cell of (up to) 2x2x2 model voxels and its value is a convex combination of theirs, so where
all corners of the cell have the same label (the argmax, or the same side of a threshold) the
voxel has it too. Only voxels in cells with mixed corners — the labels' boundaries — are
interpolated, exactly. The result equals the dense computation (ties aside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Exact = Callable[[tuple[np.ndarray, ...], "AxisMaps"], np.ndarray]
"""Labels at boundary voxels (z, y, x index arrays on the output grid), given the axis maps."""


class AxisMaps:
    """Per spatial axis, for each output index: lower source index, upper index, weight."""

    def __init__(self, source: Sequence[int], target: Sequence[int]) -> None:
        """Grid-aligned (edge to edge) maps from a `source` (D, H, W) to a `target` grid."""
        self.source = tuple(int(s) for s in source)
        self.target = tuple(int(t) for t in target)
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.w: list[np.ndarray] = []
        for n_in, n_out in zip(self.source, self.target, strict=True):
            lo, hi, w = _axis(n_in, n_out)
            self.lo.append(lo)
            self.hi.append(hi)
            self.w.append(w)

    def resampled(self, axis: int) -> bool:
        """Whether `axis` changes size (an axis that keeps it maps index to index)."""
        return self.source[axis] != self.target[axis]


def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if n_in == n_out:
        index = np.arange(n_out, dtype=np.intp)
        return index, index, np.zeros(n_out, np.float32)
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    lo = np.floor(x).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (x - lo).astype(np.float32)


def resample_linear(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """`array` [..., D, H, W] linearly resampled to spatial `shape`, float32 (a new array)."""
    maps = AxisMaps(array.shape[-3:], shape)
    out = array.astype(np.float32, copy=False)
    lead = array.ndim - 3
    axes = sorted(range(3), key=lambda a: maps.target[a] / maps.source[a])
    for axis in (a for a in axes if maps.resampled(a)):
        at = lead + axis
        low = np.take(out, maps.lo[axis], axis=at)
        high = np.take(out, maps.hi[axis], axis=at)
        view = [1] * out.ndim
        view[at] = -1
        high -= low
        high *= maps.w[axis].reshape(view)
        high += low
        out = high
    if out is array:
        out = out.copy()
    return out


def _box_uniform(labels: np.ndarray, maps: AxisMaps) -> np.ndarray:
    """True where the cell starting at each model voxel has one label at all its corners."""
    high, low = labels, labels
    for axis in (a for a in range(3) if maps.resampled(a)):
        high = np.maximum(high, _next(high, axis))
        low = np.minimum(low, _next(low, axis))
    return high == low


def _next(array: np.ndarray, axis: int) -> np.ndarray:
    """`array` shifted by one towards lower indices along `axis`, the last index repeated."""
    index = np.minimum(np.arange(array.shape[axis]) + 1, array.shape[axis] - 1)
    return np.take(array, index, axis=axis)


def _gather(array: np.ndarray, maps: AxisMaps, which: str = "lo") -> np.ndarray:
    """`array` [d, h, w] at each output voxel's lower corner (nearest below), [D, H, W]."""
    out = array
    for axis in range(3):
        if maps.resampled(axis):
            out = np.take(out, getattr(maps, which)[axis], axis=axis)
    return out


def interpolate_at(
    values: np.ndarray, points: tuple[np.ndarray, ...], maps: AxisMaps
) -> np.ndarray:
    """Trilinear values [K, N] of `values` [K, d, h, w] at output voxels `points` (z, y, x)."""
    corners = [
        (maps.lo[a][points[a]], maps.hi[a][points[a]], maps.w[a][points[a]]) for a in range(3)
    ]
    out = np.zeros((values.shape[0], len(points[0])), np.float32)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                weight = np.ones(len(points[0]), np.float32)
                index = []
                for step, (lo, hi, w) in zip((dz, dy, dx), corners, strict=True):
                    weight *= w if step else 1.0 - w
                    index.append(hi if step else lo)
                out += values[:, index[0], index[1], index[2]] * weight
    return out


def upsampled_labels(
    labels: np.ndarray,
    shape: Sequence[int],
    exact: Exact,
) -> tuple[np.ndarray, int]:
    """Labels [d, h, w] (small ints or bool) on the output grid `shape`, and how many voxels
    were interpolated: `exact(points, maps)` gives the labels at boundary voxels `points`."""
    maps = AxisMaps(labels.shape, shape)
    if not any(maps.resampled(a) for a in range(3)):
        return labels.copy(), 0
    out = _gather(labels, maps)
    mixed = ~_gather(_box_uniform(labels, maps), maps)
    points = np.nonzero(mixed)
    if len(points[0]):
        out[points] = exact(points, maps)
    return out, int(len(points[0]))
