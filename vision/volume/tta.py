"""Test-time mirroring of a volumetric model (nnU-Net's "mirroring"), torch-free.

The model runs once on the preprocessed volume as it is and once per configured set of flipped
axes (`volume.tta_flips`, axes 0 = z, 1 = y, 2 = x of the model's grid); each pass's blended
output becomes probabilities, is flipped back, and the passes are averaged
(`ProbabilityMean`). With no flips configured there is one pass and the result is that pass's
probabilities exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vision.errors import InvalidInputError

Flip = tuple[int, ...]
"""Spatial axes (0 = z, 1 = y, 2 = x) one pass flips; () is the volume as it is."""


def flip_passes(flips: Sequence[Sequence[int]]) -> list[Flip]:
    """The passes to run: () first, then each distinct configured axis set (sorted axes)."""
    passes: list[Flip] = [()]
    for item in flips:
        axes = tuple(sorted({int(a) for a in item}))
        if not axes or not set(axes) <= {0, 1, 2}:
            raise InvalidInputError(
                f"tta flip {list(item)}: a non-empty list of axes from 0 (z), 1 (y), 2 (x)"
            )
        if axes not in passes:
            passes.append(axes)
    return passes


def flip_spatial(array: np.ndarray, axes: Flip) -> np.ndarray:
    """`array` ([D, H, W] or [C, D, H, W]) reversed along the spatial `axes` (a view)."""
    if not axes:
        return array
    offset = array.ndim - 3
    if offset < 0:
        raise InvalidInputError(f"flip_spatial: a [.., D, H, W] array, got {array.shape}")
    return np.flip(array, tuple(a + offset for a in axes))


class ProbabilityMean:
    """The mean of the passes' probabilities [K, D, H, W], each flipped back first."""

    def __init__(self) -> None:
        """An empty mean; `add` every pass, then `result`."""
        self._sum: np.ndarray | None = None
        self.passes = 0

    def add(self, probs: np.ndarray, axes: Flip) -> None:
        """Add one pass's probabilities, computed on the volume flipped along `axes`.

        The mean takes `probs` over: an unflipped float32 first pass is summed into in place."""
        back = flip_spatial(probs, axes)
        if self._sum is None:
            plain = not axes and back.dtype == np.float32 and back.flags.writeable
            self._sum = back if plain else np.array(back, dtype=np.float32, copy=True)
        elif back.shape != self._sum.shape:
            raise InvalidInputError(
                f"tta pass of shape {back.shape}; the first pass had {self._sum.shape}"
            )
        else:
            self._sum += back
        self.passes += 1

    def result(self) -> np.ndarray:
        """The averaged float32 probabilities (the sum is divided in place)."""
        if self._sum is None:
            raise InvalidInputError("ProbabilityMean.result: no pass was added")
        if self.passes > 1:
            self._sum /= np.float32(self.passes)
            self.passes = 1
        return self._sum
