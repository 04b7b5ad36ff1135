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


def _code_slices(
    source: np.ndarray,
    maps: AxisMaps,
    coded: np.ndarray,
    span: tuple[int, int],
    ahead: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """`coded[k]` for k in `span` (start, stop): the label where the cell starting at model
    slice k has one label at all its corners (along the resampled axes), `MIXED` where they
    differ. A cell spans slices k and k + 1 when the slices are resampled, so `source[stop]`
    must then be final too (or stop the last slice). Every temporary is one slice (in cache).

    `ahead`: the cell extremes of `source[start]` when the previous span made them; returns
    those of `source[stop]` for the next span (None when the slices are not resampled)."""
    plane_axes = tuple(a - 1 for a in (1, 2) if maps.resampled(a))
    across = maps.resampled(0)  # the cell spans slices k and k + 1
    start, stop = span
    for k in range(start, stop):
        if ahead is None or not across:
            ahead = _cell_extremes(source[k], plane_axes)
        high, low = ahead
        ahead = None
        if across and k + 1 < source.shape[0]:
            ahead = _cell_extremes(source[k + 1], plane_axes)
            np.maximum(high, ahead[0], out=high)
            np.minimum(low, ahead[1], out=low)
        np.copyto(high, np.uint8(MIXED), where=high != low)
        coded[k] = high
    return ahead if across else None


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
    slabs = SlabLabels(labels.shape, shape, exact, labels.dtype)
    slabs.advance(labels, labels.shape[0])
    return slabs.result()


class SlabLabels:
    """`upsampled_labels` made a slab of model slices at a time, as the labels become final.

    `advance(labels, final)` takes labels whose slices before `final` are final (the later
    ones are not read) and makes every output slice that depends on final slices only: output
    slice k needs model slice `lo[k]`, and `lo[k] + 1` when the slices are resampled. `exact`
    is called per slab, on that slab's boundary voxels, and must read only final model slices
    there (its values at a voxel depend on that voxel's cell alone). After the last slice,
    `result` gives what `upsampled_labels` gives for the whole volume, bit for bit.
    """

    def __init__(
        self, source: Sequence[int], shape: Sequence[int], exact: Exact, dtype: np.dtype
    ) -> None:
        """Plan the output grid `shape` of model labels of shape `source` and `dtype`."""
        self.maps = AxisMaps(source, shape)
        self.dtype = np.dtype(dtype)
        self.interpolated = 0
        self._exact = exact
        self._copy = not any(self.maps.resampled(a) for a in range(3))
        self._out = np.empty(self.maps.target, self.dtype if self._copy else np.uint8)
        self._coded = np.empty(self.maps.source, np.uint8)
        self._ahead: tuple[np.ndarray, np.ndarray] | None = None
        self._final = 0  # model slices final
        self._made = 0  # model slices coded
        self._written = 0  # output slices written
        self._plane: np.ndarray | None = None  # the last output slice as gathered

    def advance(self, labels: np.ndarray, final: int) -> None:
        """Make the output slices that `labels`' slices before `final` decide."""
        depth = self.maps.source[0]
        final = min(int(final), depth)
        if tuple(labels.shape) != self.maps.source:
            raise InvalidInputError(
                f"SlabLabels: labels of shape {labels.shape}, planned {self.maps.source}"
            )
        if final <= self._final:
            return
        if self._copy:
            self._out[self._final : final] = labels[self._final : final]
            self._final = self._made = self._written = final
            return
        new = labels[self._final : final]
        if self.dtype != bool and int(new.max(initial=0)) >= MIXED:
            raise InvalidInputError(f"upsampled_labels: labels below {MIXED}, got {new.max()}")
        self._final = final
        source = labels.view(np.uint8) if labels.dtype == bool else labels
        codable = final if final == depth or not self.maps.resampled(0) else final - 1
        if codable > self._made:
            span = (self._made, codable)
            self._ahead = _code_slices(source, self.maps, self._coded, span, self._ahead)
            self._made = codable
        self._write()

    def _write(self) -> None:
        """Gather the output slices whose lower model slice is coded; interpolate their
        boundary voxels."""
        lo, out = self.maps.lo[0], self._out
        plane = self.maps.target[1] * self.maps.target[2]
        first, found = self._written, []
        while self._written < len(lo) and lo[self._written] < self._made:
            k = self._written
            if k and lo[k] == lo[k - 1]:
                out[k] = self._plane
            else:
                _gather_plane(self._coded[lo[k]], self.maps, out[k])
            self._plane = out[k].copy() if k + 1 < len(lo) and lo[k + 1] == lo[k] else None
            mixed = np.flatnonzero(out[k] == MIXED)
            if len(mixed):
                found.append(mixed + k * plane)
            self._written += 1
        if found and self._written > first:
            points = np.concatenate(found)
            out.reshape(-1)[points] = self._exact(points, self.maps)
            self.interpolated += len(points)

    @property
    def written(self) -> int:
        """Output slices final so far (gathered, their boundary voxels interpolated)."""
        return self._written

    def output_slices(self, start: int, stop: int) -> np.ndarray:
        """Output slices [start, stop) as made so far (final below `written`), a view."""
        return self._out[start:stop]

    def result(self) -> tuple[np.ndarray, int]:
        """The labels on the output grid and how many voxels were interpolated (every model
        slice must have been advanced)."""
        if self._written < self.maps.target[0]:
            raise InvalidInputError(
                f"SlabLabels.result: {self._final} of {self.maps.source[0]} slices advanced"
            )
        if self._copy:
            return self._out, 0
        if self.dtype == bool:
            return self._out.view(bool), self.interpolated
        return self._out.astype(self.dtype, copy=False), self.interpolated
