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


def _cell_extremes(plane: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 copies of `plane` [h, w] holding the largest and the smallest label over each
    cell's corners: the voxel and its next neighbour along each of `axes` (0 rows, 1 columns;
    the last index is its own neighbour)."""
    high = plane.astype(np.uint8)
    low = high.copy()
    for axis in axes:
        head = (slice(0, -1), slice(None)) if axis == 0 else (slice(None), slice(0, -1))
        tail = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        high[head] = np.maximum(high[head], high[tail])
        low[head] = np.minimum(low[head], low[tail])
    return high, low


def _coded(labels: np.ndarray, maps: AxisMaps) -> np.ndarray:
    """uint8 [d, h, w]: the label where the cell starting at a model voxel has one label at all
    its corners (along the resampled axes), `MIXED` where they differ. Made a slice at a time:
    every temporary is one slice (in cache; no volume-sized allocation but the result)."""
    source = labels.view(np.uint8) if labels.dtype == bool else labels
    plane_axes = tuple(a - 1 for a in (1, 2) if maps.resampled(a))
    coded = np.empty(labels.shape, np.uint8)
    ahead = _cell_extremes(source[0], plane_axes)
    for k in range(labels.shape[0]):
        high, low = ahead
        if k + 1 < labels.shape[0]:
            ahead = _cell_extremes(source[k + 1], plane_axes)
            if maps.resampled(0):  # the cell spans slices k and k + 1
                np.maximum(high, ahead[0], out=high)
                np.minimum(low, ahead[1], out=low)
        np.copyto(high, np.uint8(MIXED), where=high != low)
        coded[k] = high
    return coded


def _gather_plane(plane: np.ndarray, maps: AxisMaps, out: np.ndarray) -> None:
    """`plane` [h, w] at each output voxel's lower corner (nearest below), into `out` [H, W]."""
    rows = np.take(plane, maps.lo[1], axis=0) if maps.resampled(1) else plane
    if maps.resampled(2):
        np.take(rows, maps.lo[2], axis=1, out=out, mode="clip")
    else:
        out[...] = rows


def interpolate_at(values: np.ndarray, points: np.ndarray, maps: AxisMaps) -> np.ndarray:
    """Trilinear values [K, N] of `values` [K, d, h, w] at the output voxels whose flat (C
    order) indices on the output grid are `points`.

    The corners' flat offsets and weights are built per axis once, and per (z, y) corner pair
    once for both x corners; each corner's weight is the same float32 product (z, then y,
    then x) and the corners are summed in the same order as one at a time. Along an axis that
    keeps its size the upper corner (weight 0) is skipped: for finite values it adds +-0."""
    _, height, width = maps.target
    z, rest = np.divmod(points, height * width)
    y, x = np.divmod(rest, width)
    flat = values.reshape(values.shape[0], -1)
    _, h, w = maps.source
    rows = [maps.lo[0][z] * h, maps.hi[0][z] * h]
    cols = [maps.lo[1][y], maps.hi[1][y]]
    cells = [maps.lo[2][x], maps.hi[2][x]]
    one = np.float32(1.0)
    weights = [(one - maps.w[a][i], maps.w[a][i]) for a, i in enumerate((z, y, x))]
    out = np.zeros((values.shape[0], len(points)), np.float32)
    gathered = np.empty_like(out)
    steps = [(0, 1) if maps.resampled(a) else (0,) for a in range(3)]
    for dz in steps[0]:
        for dy in steps[1]:
            line = (rows[dz] + cols[dy]) * w
            plane_weight = weights[0][dz] * weights[1][dy]
            for dx in steps[2]:
                _gather(flat, line + cells[dx], gathered)
                gathered *= plane_weight * weights[2][dx]
                out += gathered
    return out


def _gather(flat: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """`flat` [K, n] at `index` into `out` [K, N] (one channel: a 1-D take, cheaper)."""
    if flat.shape[0] == 1:
        np.take(flat[0], index, out=out[0])
    else:
        np.take(flat, index, axis=1, out=out)


def upsampled_labels(
    labels: np.ndarray, shape: Sequence[int], exact: Exact
) -> tuple[np.ndarray, int]:
    """Labels [d, h, w] (ints below 255, or bool) on the output grid `shape`, and how many
    voxels were interpolated: `exact(points, maps)` gives the labels at the boundary voxels
    (flat output indices `points`, for `interpolate_at`). The output is gathered a slice at a
    time (an output slice's lower model slice, nearest below in-plane)."""
    maps = AxisMaps(labels.shape, shape)
    if not any(maps.resampled(a) for a in range(3)):
        return labels.copy(), 0
    if labels.dtype != bool and int(labels.max(initial=0)) >= MIXED:
        raise InvalidInputError(f"upsampled_labels: labels below {MIXED}, got {labels.max()}")
    coded = _coded(labels, maps)
    out = np.empty(maps.target, np.uint8)
    plane = maps.target[1] * maps.target[2]
    found = []
    for k, below in enumerate(maps.lo[0]):
        if k and below == maps.lo[0][k - 1]:
            out[k] = out[k - 1]
        else:
            _gather_plane(coded[below], maps, out[k])
        mixed = np.flatnonzero(out[k] == MIXED)
        if len(mixed):
            found.append(mixed + k * plane)
    points = np.concatenate(found) if found else np.empty(0, np.intp)
    if len(points):
        out.reshape(-1)[points] = exact(points, maps)
    if labels.dtype == bool:
        return out.view(bool), len(points)
    return out.astype(labels.dtype, copy=False), len(points)
