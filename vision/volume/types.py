"""Plain data of the volumetric path: a volume with its geometry, and a volumetric result.

Axis conventions, used everywhere in `vision.volume`:

* `voxels` is indexed [slice, row, column] = [D, H, W] (numpy order, column fastest).
* `spacing_mm` is (slice, row, column) spacing in mm, matching those axes: the distance between
  slice centres, between rows (PixelSpacing[0]) and between columns (PixelSpacing[1]).
* `direction` rows are unit vectors in patient coordinates (DICOM LPS, mm): row 0 the
  direction of increasing column index (ImageOrientationPatient[0:3]), row 1 of increasing
  row index (ImageOrientationPatient[3:6]), row 2 of increasing slice index.
* `origin_mm` is the patient position (x, y, z) of the centre of voxel [0, 0, 0].
* `affine()` maps (column, row, slice, 1) voxel indices (i, j, k, 1) to patient (x, y, z, 1),
  the NIfTI / ITK index order, in LPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vision.io.dicom_header import DicomHeader
    from vision.volume.orient import Reorientation

Spacing = tuple[float, float, float]
"""(slice, row, column) spacing in mm, the order of a volume's [D, H, W] axes."""


@dataclass(frozen=True)
class Volume:
    """A 3D image on a regular grid, with its place in patient space.

    `voxels` is float32 [D, H, W] with the modality LUT (rescale slope/intercept) applied, so CT
    is in Hounsfield units (a raw volume assembled by the server keeps its integer type:
    `volume_from_raw(keep_integers=True)`; so does a series whose values are integers,
    `volume_from_datasets(keep_integers=True)`: the same values). `slices` holds, per slice,
    the header of the DICOM instance (frame) it came from, and `source_frames` its (SOP
    Instance UID, 1-based frame number), so results can reference their sources; both are empty
    for raw and NIfTI volumes. `notes` says what was assumed while assembling (for example a
    single slice's thickness used as spacing).
    """

    voxels: np.ndarray
    spacing_mm: Spacing
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    slices: tuple[DicomHeader | None, ...] = ()
    source_frames: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, H, W): slices, rows, columns."""
        d, h, w = self.voxels.shape
        return int(d), int(h), int(w)

    def voxel_volume_mm3(self) -> float:
        """The volume of one voxel in mm³."""
        return float(np.prod(np.asarray(self.spacing_mm, dtype=np.float64)))

    def affine(self) -> np.ndarray:
        """4x4 float64 map from (column, row, slice, 1) indices to patient (x, y, z, 1) in LPS."""
        out = np.eye(4)
        zooms = np.asarray(self.spacing_mm[::-1], dtype=np.float64)  # column, row, slice
        out[:3, :3] = np.asarray(self.direction, dtype=np.float64).T * zooms
        out[:3, 3] = self.origin_mm
        return out

    def position_mm(self, index: tuple[float, float, float]) -> np.ndarray:
        """The patient position (x, y, z) of voxel index (slice, row, column)."""
        k, j, i = index
        return (self.affine() @ np.array([i, j, k, 1.0]))[:3]


@dataclass(frozen=True)
class VolumeMeta:
    """What `VolumePipeline.preprocess` did, so the model's output maps back to the volume.

    `shape`/`spacing_mm` are the original grid's, `model_shape`/`model_spacing_mm` the grid the
    model saw (after reorientation and resampling, before sliding-window padding), and
    `reorientation` how the source axes were permuted / flipped first (None: not at all).
    """

    shape: tuple[int, int, int]
    spacing_mm: Spacing
    model_shape: tuple[int, int, int]
    model_spacing_mm: Spacing
    reorientation: Reorientation | None = None  # source -> canonical axes, when not identity


@dataclass
class VolumeMask:
    """One label's 3D mask on the original grid, and its size in voxels and mm³."""

    class_id: int
    label: str
    score: float  # mean probability inside the mask
    mask: np.ndarray  # bool [D, H, W]
    voxel_count: int
    volume_mm3: float
    # `encode_rle(mask)` where it was made as the mask's slices became final; else None
    run_lengths: list[int] | None = None


@dataclass
class VolumeResult:
    """The masks of one volume (labels below the config's `min_voxels` are left out)."""

    masks: list[VolumeMask] = field(default_factory=list)
    shape: tuple[int, int, int] = (0, 0, 0)
    spacing_mm: Spacing = (1.0, 1.0, 1.0)
