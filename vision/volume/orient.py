"""Canonical reorientation of a volume: axes permuted and flipped only, never interpolated.

An orientation code names where a volume's column, row and slice axes point, one letter each
from L/R (patient x: Left is +x in DICOM's LPS), P/A (y: Posterior +y) and S/I (z: Superior
+z): an axial DICOM series with ImageOrientationPatient [1, 0, 0, 0, 1, 0] and slices towards the
head is "LPS", an MSD NIfTI crop read by `volume_from_nifti` is "RAS". `Reorientation.of`
finds, from the direction matrix, the permutation and flips that bring a volume closest to the
code (each axis to the patient axis it is most aligned with); `apply` makes the canonical
volume, and `undo` maps anything on the canonical grid (a mask, probabilities) back to the
source grid voxel for voxel.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vision.errors import InvalidInputError
from vision.volume.types import Volume

# letter -> (patient axis, sign) in DICOM LPS
_LETTERS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


def parse_code(code: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(patient axis, sign) for the column, row and slice axes of an orientation code."""
    letters = code.upper()
    pairs = [_LETTERS.get(c) for c in letters]
    if len(letters) != 3 or None in pairs or sorted(p[0] for p in pairs) != [0, 1, 2]:  # type: ignore[index]
        raise InvalidInputError(
            f"orientation {code!r}: three letters, one of L/R, P/A, S/I each (e.g. RAS, LPS)"
        )
    return pairs[0], pairs[1], pairs[2]  # type: ignore[return-value]


def orientation_code(direction: np.ndarray) -> str:
    """The code (column, row, slice) of the patient axes `direction`'s rows are closest to."""
    names = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}
    matrix = np.asarray(direction, dtype=np.float64)
    axes = _closest_axes(matrix)
    return "".join(names[(a, 1 if matrix[r, a] > 0 else -1)] for r, a in enumerate(axes))


def _closest_axes(direction: np.ndarray) -> tuple[int, int, int]:
    """For each direction row, the patient axis it is most aligned with (a permutation)."""
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: sum(abs(direction[r, p[r]]) for r in range(3)),
    )
    return best[0], best[1], best[2]


@dataclass(frozen=True)
class Reorientation:
    """Source array axes → canonical: canonical axis b is source axis `order[b]` (array axes
    0 = slices, 1 = rows, 2 = columns), reversed where `flip[b]`."""

    order: tuple[int, int, int] = (0, 1, 2)
    flip: tuple[bool, bool, bool] = (False, False, False)

    @classmethod
    def of(cls, direction: np.ndarray, code: str) -> Reorientation:
        """What brings a volume of `direction` (rows: column, row, slice axes) to `code`."""
        matrix = np.asarray(direction, dtype=np.float64)
        patient = _closest_axes(matrix)  # per direction row
        wanted = parse_code(code)  # per direction row of the canonical volume
        order, flip = [0, 0, 0], [False, False, False]
        for b in range(3):  # canonical array axis; its direction row is 2 - b
            axis, sign = wanted[2 - b]
            row = patient.index(axis)
            order[b] = 2 - row
            flip[b] = bool(np.sign(matrix[row, axis]) != sign)
        return cls((order[0], order[1], order[2]), (flip[0], flip[1], flip[2]))

    @property
    def identity(self) -> bool:
        """True when nothing moves."""
        return self.order == (0, 1, 2) and not any(self.flip)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Source-grid `array` ([D, H, W] or [C, D, H, W]) on the canonical grid (a view)."""
        lead = tuple(range(array.ndim - 3))
        moved = array.transpose(*lead, *(len(lead) + a for a in self.order))
        flips = tuple(len(lead) + b for b in range(3) if self.flip[b])
        return np.flip(moved, flips) if flips else moved

    def undo(self, array: np.ndarray) -> np.ndarray:
        """Canonical-grid `array` ([D, H, W] or [C, D, H, W]) back on the source grid (a view)."""
        lead = tuple(range(array.ndim - 3))
        flips = tuple(len(lead) + b for b in range(3) if self.flip[b])
        unflipped = np.flip(array, flips) if flips else array
        inverse = np.argsort(self.order)
        return unflipped.transpose(*lead, *(len(lead) + int(a) for a in inverse))

    def shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """The canonical (D, H, W) of a source grid of `shape`."""
        return int(shape[self.order[0]]), int(shape[self.order[1]]), int(shape[self.order[2]])

    def volume(self, volume: Volume) -> Volume:
        """`volume` on the canonical grid: voxels, spacing, origin and direction (no headers)."""
        if self.identity:
            return volume
        rows = np.asarray(volume.direction, dtype=np.float64)
        corner = [0.0, 0.0, 0.0]  # source (slice, row, column) index of canonical voxel 0
        direction = np.zeros((3, 3))
        for b, a in enumerate(self.order):
            sign = -1.0 if self.flip[b] else 1.0
            direction[2 - b] = rows[2 - a] * sign
            corner[a] = volume.shape[a] - 1.0 if self.flip[b] else 0.0
        spacing = tuple(float(volume.spacing_mm[a]) for a in self.order)
        return Volume(
            voxels=self.apply(volume.voxels),
            spacing_mm=spacing,  # type: ignore[arg-type]
            origin_mm=tuple(float(v) for v in volume.position_mm(tuple(corner))),  # type: ignore[arg-type]
            direction=direction,
            notes=(*volume.notes, f"reoriented to {orientation_code(direction)}"),
        )
