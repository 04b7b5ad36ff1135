"""Sliding-window inference over a volume, torch-free, matching MONAI's `sliding_window_inference`.

The same window placement (`monai.data.utils.dense_patch_slices` with MONAI's scan interval
`int(patch * (1 - overlap))`, at least 1, and the patch itself where the volume is exactly one
patch long), the same importance map (`monai.data.utils.compute_importance_map`: a separable
Gaussian of sigma `sigma_scale * patch` per axis, not normalised, clamped below to its minimum
or 1e-3; or ones), the same constant zero padding of a volume smaller than the patch (half
before, the rest after), and the same blending (sum of weighted windows over sum of weights).

The API is decomposed for a server that sends windows through a dynamic batcher a few at a
time: `pad_to_patch`, then `plan_windows` on the padded shape, a `Blender` that takes each
window's output as it comes, and `Blender.result` that removes the padding. `sliding_window`
runs the whole loop for a callable.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from vision.errors import InvalidInputError

Window = tuple[slice, slice, slice]
PadSpec = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""(before, after) zero padding of each spatial axis (D, H, W)."""

BLENDS = ("gaussian", "constant")
_CHUNK_VOXELS = 1 << 16
"""Values a Blender weights and adds at once (a few z-planes of a window: 256 KiB, in cache);
windows of at most four times that go in one step (the loop would cost more than it saves)."""


def _triple(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    items = tuple(value) if isinstance(value, Sequence) else (value, value, value)
    if len(items) != 3:
        raise InvalidInputError(f"{name}: three values (z, y, x) or one, got {value}")
    return items[0], items[1], items[2]


def _patch(patch: Sequence[int]) -> tuple[int, int, int]:
    if len(patch) != 3 or min(patch) < 1:
        raise InvalidInputError(f"patch: three positive voxel counts (z, y, x), got {patch}")
    return int(patch[0]), int(patch[1]), int(patch[2])


def scan_interval(
    shape: Sequence[int], patch: Sequence[int], overlap: float | Sequence[float]
) -> tuple[int, int, int]:
    """MONAI's step between window starts per axis (`_get_scan_interval`)."""
    overlaps = _triple(overlap, "overlap")
    for o in overlaps:
        if not 0.0 <= o < 1.0:
            raise InvalidInputError(f"overlap: a fraction of the patch in [0, 1), got {overlap}")
    steps = []
    for size, p, o in zip(shape, _patch(patch), overlaps, strict=True):
        steps.append(p if p == size else max(int(p * (1 - o)), 1))
    return steps[0], steps[1], steps[2]


def _starts(size: int, p: int, step: int) -> list[int]:
    """`dense_patch_slices`' window starts along one axis of (padded) length `size`."""
    p = min(p, size)
    count = int(math.ceil(float(size) / step))
    last = next((d for d in range(count) if d * step + p >= size), None)
    number = last + 1 if last is not None else 1
    return [i * step - max(i * step + p - size, 0) for i in range(number)]


def plan_windows(
    shape: Sequence[int], patch: Sequence[int], overlap: float | Sequence[float]
) -> list[Window]:
    """The windows over a volume of `shape` (D, H, W), in MONAI's order (last axis fastest).

    The slices index the volume padded by `pad_to_patch` (an axis shorter than the patch counts
    as the patch's length), so every window is exactly `patch`.
    """
    p = _patch(patch)
    size = tuple(max(int(s), q) for s, q in zip(shape, p, strict=True))
    steps = scan_interval(size, p, overlap)
    axes = [_starts(s, q, t) for s, q, t in zip(size, p, steps, strict=True)]
    return [
        (slice(z, z + p[0]), slice(y, y + p[1]), slice(x, x + p[2]))
        for z in axes[0]
        for y in axes[1]
        for x in axes[2]
    ]


def pad_to_patch(array: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, PadSpec]:
    """Zero-pad a [C, D, H, W] array so each spatial axis is at least the patch (as MONAI does).

    Returns the padded array (the input itself when no axis is short) and the padding, which
    `Blender.result` removes again.
    """
    if array.ndim != 4:
        raise InvalidInputError(f"pad_to_patch: a [C, D, H, W] array, got shape {array.shape}")
    spec = []
    for size, p in zip(array.shape[1:], _patch(patch), strict=True):
        diff = max(p - int(size), 0)
        spec.append((diff // 2, diff - diff // 2))
    pad: PadSpec = (spec[0], spec[1], spec[2])
    if not any(b or a for b, a in pad):
        return array, pad
    return np.pad(array, ((0, 0), *pad), mode="constant", constant_values=0), pad


def importance_map(
    patch: Sequence[int], blend: str = "gaussian", sigma_scale: float | Sequence[float] = 0.125
) -> np.ndarray:
    """The float32 weight of each voxel of a window: MONAI's `compute_importance_map`."""
    p = _patch(patch)
    if blend == "constant":
        weights = np.ones(p, dtype=np.float32)
    elif blend == "gaussian":
        scales = _triple(sigma_scale, "sigma_scale")
        axes = []
        for size, scale in zip(p, scales, strict=True):
            sigma = size * scale
            x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)[:size]
            axes.append(np.exp(x**2 / np.float32(-2 * sigma**2)).astype(np.float32))
        weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    else:
        raise InvalidInputError(f"blend: one of {', '.join(BLENDS)}, got {blend!r}")
    floor = max(float(weights.min()), 1e-3)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


class Blender:
    """Accumulates window outputs into a [K, D, H, W] result, weighted as MONAI blends them.

    `padded_shape` is the (D, H, W) of the padded volume the windows of `plan_windows` index.
    Windows may be added in any order; `result` divides by the summed weights and removes the
    padding. Every voxel must be covered by some window before `result` is called.

    Given the `plan` (every window `plan_windows` gave), the Blender knows which slices no
    window still to come touches (`final_depth`: every planned window starting before it has
    been added) and `divide_until` divides those slices' sums while later windows are added
    elsewhere (from another thread: the slices are disjoint); `result` divides the rest. The
    values are the same as dividing once (the same float32 quotient per voxel).
    """

    def __init__(
        self,
        channels: int,
        padded_shape: Sequence[int],
        patch: Sequence[int],
        blend: str = "gaussian",
        sigma_scale: float | Sequence[float] = 0.125,
        plan: Sequence[Window] | None = None,
    ) -> None:
        """Allocate the float32 sums for `channels` output channels over `padded_shape`;
        `plan`: the windows that will be added (all of them), for `final_depth`."""
        self.patch = _patch(patch)
        shape = tuple(int(s) for s in padded_shape)
        if len(shape) != 3 or any(s < q for s, q in zip(shape, self.patch, strict=True)):
            raise InvalidInputError(
                f"Blender: padded_shape {shape} must be three axes, each at least the patch "
                f"{self.patch} (pad with pad_to_patch first)"
            )
        self.weights = importance_map(self.patch, blend, sigma_scale)
        self._key = (shape, self.patch, blend, str(sigma_scale))
        self._sum = np.zeros((int(channels), *shape), dtype=np.float32)
        plane = self.patch[1] * self.patch[2] * int(channels)
        small = plane * self.patch[0] <= 4 * _CHUNK_VOXELS  # in cache as it is: one step
        self._step = self.patch[0] if small else max(1, min(self.patch[0], _CHUNK_VOXELS // plane))
        self._scratch = np.empty((int(channels), self._step, *self.patch[1:]), dtype=np.float32)
        self._starts: list[tuple[int, int, int]] = []
        self.windows_added = 0
        self._divided = False
        self._plan = None if plan is None else tuple(sorted(_start(w) for w in plan))
        self._left: dict[int, int] = {}  # planned windows not added, by first z
        for z, _, _ in self._plan or ():
            self._left[z] = self._left.get(z, 0) + 1
        self._final = self._final_now()
        self._divided_to = 0  # padded slices before it are divided

    def add(self, window: Window, probs: np.ndarray) -> None:
        """Add one window's output `probs` [K, pd, ph, pw] at `window` (from `plan_windows`).

        Weighted and summed a few z-planes at a time (the scratch stays in cache); each voxel
        gets the same float32 product and sum as in one step."""
        self._check(probs, self._sum.shape[0])
        self._check_window(window)
        for z, scratch in self._chunks():
            step = scratch.shape[1]
            np.multiply(probs[:, z : z + step], self.weights[z : z + step], out=scratch)
            self._accumulate(window, z, scratch)
        self._added(window)

    def add_difference(self, window: Window, logits: np.ndarray) -> None:
        """Add `logits[1] - logits[0]` of a two-channel window output [2, pd, ph, pw] as this
        one-channel Blender's value: the blended difference, from which a two-class argmax
        and softmax follow (`softmax([a, b])[1] == sigmoid(b - a)`), at half the blending."""
        if self._sum.shape[0] != 1:
            raise InvalidInputError("Blender.add_difference: make the Blender with one channel")
        self._check(logits, 2)
        self._check_window(window)
        for z, scratch in self._chunks():
            step = scratch.shape[1]
            np.subtract(logits[1, z : z + step], logits[0, z : z + step], out=scratch[0])
            scratch *= self.weights[z : z + step]
            self._accumulate(window, z, scratch)
        self._added(window)

    def _check(self, output: np.ndarray, channels: int) -> None:
        expected = (channels, *self.patch)
        if tuple(output.shape) != expected:
            raise InvalidInputError(
                f"window output of shape {tuple(output.shape)}; expected {expected} "
                "(channels, patch): the model must return one value per input voxel"
            )
        if self._divided:
            raise InvalidInputError("Blender.add after result: make a new Blender per volume")

    def _check_window(self, window: Window) -> None:
        if window[0].start < self._divided_to:
            raise InvalidInputError(
                f"Blender.add: the window at z {window[0].start} reaches slices already divided "
                f"(before {self._divided_to}); it is not in the plan, or was added twice"
            )

    def _chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first z of the window, scratch [K, step or fewer, ph, pw]) over the patch's depth."""
        for z in range(0, self.patch[0], self._step):
            yield z, self._scratch[:, : min(self._step, self.patch[0] - z)]

    def _accumulate(self, window: Window, z: int, scratch: np.ndarray) -> None:
        start = window[0].start + z
        self._sum[:, start : start + scratch.shape[1], window[1], window[2]] += scratch

    def _added(self, window: Window) -> None:
        self._starts.append(_start(window))
        self.windows_added += 1
        if self._plan is not None:
            z = window[0].start
            if not self._left.get(z):
                raise InvalidInputError(
                    f"Blender.add: a window at z {z} beyond the plan (not in it, or added twice)"
                )
            self._left[z] -= 1
            self._final = self._final_now()

    def _final_now(self) -> int:
        waiting = [z for z, n in self._left.items() if n]
        return min(waiting) if waiting else int(self._sum.shape[1])

    def final_depth(self) -> int:
        """The padded slices before this one have every window that touches them added (all
        of them when every planned window is in); 0 without a plan until `result`."""
        if self._plan is None:
            return int(self._sum.shape[1]) if self._divided else 0
        return self._final

    @property
    def divided_depth(self) -> int:
        """The padded slices before this one are divided (final blended values)."""
        return self._divided_to

    def divide_until(self, depth: int) -> None:
        """Divide the sums of the padded slices before `depth` (at most `final_depth()`) by
        the plan's summed weights, in place; slices already divided are left as they are."""
        if self._plan is None:
            raise InvalidInputError("Blender.divide_until: make the Blender with its plan")
        if depth > self._final:
            raise InvalidInputError(
                f"Blender.divide_until({depth}): windows touching those slices are still to "
                f"come (final before {self._final})"
            )
        start = self._divided_to
        if depth <= start:
            return
        count = _coverage(*self._key, self._plan)
        if count is None:
            raise InvalidInputError("Blender: the plan leaves some voxels covered by no window")
        self._divided_to = depth  # before the division: an add there from now on is refused
        np.divide(self._sum[:, start:depth], count[start:depth], out=self._sum[:, start:depth])

    def view(self, pad_spec: PadSpec | None = None) -> np.ndarray:
        """The [K, D, H, W] sums with `pad_spec`'s padding removed (a view): the slices before
        `divided_depth` (less the padding before) hold the blended result, the rest sums."""
        return _crop(self._sum, pad_spec)

    def result(self, pad_spec: PadSpec | None = None) -> np.ndarray:
        """The blended float32 [K, D, H, W], with `pad_spec`'s padding removed."""
        if self._plan is not None and self._final < self._sum.shape[1]:
            raise InvalidInputError(
                f"Blender.result: {self.windows_added} of the plan's {len(self._plan)} windows "
                "added; add them all before asking for the result"
            )
        count = _coverage(*self._key, tuple(sorted(self._starts)))
        if count is None:
            raise InvalidInputError(
                "Blender.result: some voxels are covered by no window; add every window of "
                "plan_windows before asking for the result"
            )
        if not self._divided:  # in place: the sums become the result once
            start = self._divided_to
            if start:
                np.divide(self._sum[:, start:], count[start:], out=self._sum[:, start:])
            else:
                np.divide(self._sum, count, out=self._sum)
            self._divided = True
            self._divided_to = int(self._sum.shape[1])
        return _crop(self._sum, pad_spec)


def _start(window: Window) -> tuple[int, int, int]:
    return window[0].start, window[1].start, window[2].start


def _crop(array: np.ndarray, pad_spec: PadSpec | None) -> np.ndarray:
    """`array` [K, D, H, W] less `pad_spec`'s padding (a view; itself without one)."""
    if pad_spec is None:
        return array
    crop = tuple(
        slice(before, size - after)
        for (before, after), size in zip(pad_spec, array.shape[1:], strict=True)
    )
    return array[(slice(None), *crop)]


@functools.lru_cache(maxsize=2)
def _coverage(
    shape: tuple[int, ...],
    patch: tuple[int, int, int],
    blend: str,
    sigma: str,
    starts: tuple[tuple[int, int, int], ...],
) -> np.ndarray | None:
    """The summed window weights over a padded volume (read-only, cached: volumes of one size
    share it), or None where some voxel is covered by no window."""
    weights = importance_map(patch, blend, _sigma(sigma))
    count = np.zeros(shape, dtype=np.float32)
    for z, y, x in starts:
        count[z : z + patch[0], y : y + patch[1], x : x + patch[2]] += weights
    if not count.all():
        return None
    count.flags.writeable = False
    return count


def _sigma(text: str) -> float | tuple[float, ...]:
    value = ast.literal_eval(text)
    return tuple(value) if isinstance(value, (list, tuple)) else float(value)


def sliding_window(
    volume: np.ndarray,
    patch: Sequence[int],
    overlap: float | Sequence[float],
    run: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 4,
    blend: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
) -> np.ndarray:
    """`run` over every window of `volume` [C, D, H, W], blended into float32 [K, D, H, W].

    `run` takes a batch [N, C, pd, ph, pw] of up to `batch_size` windows and returns
    [N, K, pd, ph, pw]. Same result as MONAI's `sliding_window_inference` with
    `mode=blend`, `sigma_scale`, constant zero padding.
    """
    padded, pad = pad_to_patch(np.asarray(volume, dtype=np.float32), patch)
    windows = plan_windows(padded.shape[1:], patch, overlap)
    blender: Blender | None = None
    for start in range(0, len(windows), max(int(batch_size), 1)):
        chunk = windows[start : start + max(int(batch_size), 1)]
        batch = np.stack([padded[(slice(None), *w)] for w in chunk])
        out = np.asarray(run(batch))
        if out.ndim != 5 or out.shape[0] != len(chunk):
            raise InvalidInputError(
                f"run returned shape {tuple(out.shape)} for a batch of {len(chunk)} windows; "
                "expected [N, K, pd, ph, pw]"
            )
        if blender is None:
            blender = Blender(out.shape[1], padded.shape[1:], patch, blend, sigma_scale)
        for window, probs in zip(chunk, out, strict=True):
            blender.add(window, probs)
    assert blender is not None  # plan_windows always yields at least one window
    return blender.result(pad)
