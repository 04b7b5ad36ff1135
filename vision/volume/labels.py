"""Cheap linear resampling in float32, and exact labels of linearly resampled probabilities.

`resample_linear` gives scipy's `ndimage.zoom(order=1, mode="nearest", grid_mode=True)`
values (to float32 rounding) separably in float32: OpenCV's bilinear resize in each slice, then
a gather and multiply-add along the slices; axes that keep their size are skipped.

`upsampled_labels` gives what thresholding or the argmax of the probabilities linearly
resampled to the original grid gives, without resampling them: each output voxel lies in a
cell of (up to) 2x2x2 model voxels and its value is a convex combination of theirs, so where
all corners of the cell have the same label (the argmax, or the same side of a threshold) the
voxel has it too. Only voxels in cells with mixed corners — the labels' boundaries — are
interpolated, exactly. The result equals the dense computation (ties aside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from vision.errors import InvalidInputError

Exact = Callable[[np.ndarray, "AxisMaps"], np.ndarray]
"""Labels at boundary voxels (flat indices on the output grid), given the axis maps."""


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
    """`array` [..., D, H, W] linearly resampled to spatial `shape`, float32 (a new array).

    Rows and columns go through OpenCV's bilinear `resize` slice by slice (the same
    half-voxel-aligned sample positions and edge clamping); slices through two gathers and a
    multiply-add; a shrinking slice axis goes first.
    """
    maps = AxisMaps(array.shape[-3:], shape)
    out = array.astype(np.float32, copy=False)
    shrink_first = maps.target[0] < maps.source[0]
    if shrink_first:
        out = _along_slices(out, maps)
    out = _in_plane(out, maps)
    if not shrink_first:
        out = _along_slices(out, maps)
    return out.copy() if out is array else out


def _along_slices(array: np.ndarray, maps: AxisMaps) -> np.ndarray:
    if not maps.resampled(0):
        return array
    at = array.ndim - 3
    low = np.take(array, maps.lo[0], axis=at)
    high = np.take(array, maps.hi[0], axis=at)
    high -= low
    high *= maps.w[0].reshape([-1 if a == at else 1 for a in range(array.ndim)])
    high += low
    return high


def _in_plane(array: np.ndarray, maps: AxisMaps) -> np.ndarray:
    if not (maps.resampled(1) or maps.resampled(2)):
        return array
    height, width = maps.target[1], maps.target[2]
    out = np.empty((*array.shape[:-2], height, width), np.float32)
    source = array.reshape(-1, *array.shape[-2:])
    target = out.reshape(-1, height, width)
    for index in range(source.shape[0]):
        cv2.resize(source[index], (width, height), target[index], interpolation=cv2.INTER_LINEAR)
    return out


def channel_argmax(values: np.ndarray) -> np.ndarray:
    """`values.argmax(axis=0)` as uint8 (ties to the first channel), one pass per channel:
    much faster than numpy's strided argmax over a short leading axis."""
    if values.shape[0] == 2:  # one comparison, viewed as 0 / 1
        return np.greater(values[1], values[0]).view(np.uint8)
    best = values[0].copy()
    index = np.zeros(values.shape[1:], np.uint8 if values.shape[0] < 256 else np.int16)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        index[better] = c
        np.maximum(best, values[c], out=best)
    return index


MIXED = 255
"""The code, in the gathered label map, of an output voxel whose cell has mixed corners."""


def _coded(labels: np.ndarray, maps: AxisMaps) -> np.ndarray:
    """uint8 [d, h, w]: the label where the cell starting at a model voxel has one label at all
    its corners (along the resampled axes), `MIXED` where they differ."""
    coded = labels.astype(np.uint8)  # a copy: labels are < MIXED (checked by the caller)
    high, low = coded, coded
    for axis in (a for a in range(3) if maps.resampled(a)):
        high = np.maximum(high, _next(high, axis), out=None if high is coded else high)
        low = np.minimum(low, _next(low, axis), out=None if low is coded else low)
    coded[high != low] = MIXED
    return coded


def _next(array: np.ndarray, axis: int) -> np.ndarray:
    """`array` shifted by one towards lower indices along `axis`, the last index repeated."""
    out = np.empty_like(array)
    head, tail, last = [slice(None)] * 3, [slice(None)] * 3, [slice(None)] * 3
    head[axis], tail[axis], last[axis] = slice(0, -1), slice(1, None), slice(-1, None)
    out[tuple(head)] = array[tuple(tail)]
    out[tuple(last)] = array[tuple(last)]
    return out


def _gather(array: np.ndarray, maps: AxisMaps) -> np.ndarray:
    """`array` [d, h, w] at each output voxel's lower corner (nearest below), [D, H, W]."""
    out = array
    for axis in range(3):
        if maps.resampled(axis):
            out = np.take(out, maps.lo[axis], axis=axis)
    return out


def interpolate_at(values: np.ndarray, points: np.ndarray, maps: AxisMaps) -> np.ndarray:
    """Trilinear values [K, N] of `values` [K, d, h, w] at the output voxels whose flat (C
    order) indices on the output grid are `points`."""
    _, height, width = maps.target
    z, rest = np.divmod(points, height * width)
    y, x = np.divmod(rest, width)
    flat = values.reshape(values.shape[0], -1)
    d, h, w = maps.source
    lo = [maps.lo[0][z], maps.lo[1][y], maps.lo[2][x]]
    hi = [maps.hi[0][z], maps.hi[1][y], maps.hi[2][x]]
    wt = [maps.w[0][z], maps.w[1][y], maps.w[2][x]]
    out = np.zeros((values.shape[0], len(points)), np.float32)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                steps = (dz, dy, dx)
                index = [(hi if s else lo)[a] for a, s in enumerate(steps)]
                weight = np.ones(len(points), np.float32)
                for a, step in enumerate(steps):
                    weight *= wt[a] if step else np.float32(1.0) - wt[a]
                source = (index[0] * h + index[1]) * w + index[2]
                out += np.take(flat, source, axis=1) * weight
    return out


def upsampled_labels(
    labels: np.ndarray, shape: Sequence[int], exact: Exact
) -> tuple[np.ndarray, int]:
    """Labels [d, h, w] (ints below 255, or bool) on the output grid `shape`, and how many
    voxels were interpolated: `exact(points, maps)` gives the labels at the boundary voxels
    (flat output indices `points`, for `interpolate_at`)."""
    maps = AxisMaps(labels.shape, shape)
    if not any(maps.resampled(a) for a in range(3)):
        return labels.copy(), 0
    if labels.dtype != bool and int(labels.max(initial=0)) >= MIXED:
        raise InvalidInputError(f"upsampled_labels: labels below {MIXED}, got {labels.max()}")
    out = _gather(_coded(labels, maps), maps)
    flat = out.reshape(-1)
    points = np.flatnonzero(flat == MIXED)
    if len(points):
        flat[points] = exact(points, maps)
    return out.astype(labels.dtype, copy=False), len(points)
