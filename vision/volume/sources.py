"""Volumes that are not DICOM series: NIfTI files (training data) and raw voxel buffers (RPC).

NIfTI stores RAS+ world coordinates and (i, j, k) voxel order; a `Volume` is LPS with voxels
[D, H, W] = [k, j, i], so the affine's first two rows are negated and the array transposed.
nibabel is imported only when a NIfTI file is read (a server install need not have it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision.errors import ImageTooLargeError, InvalidInputError
from vision.volume.types import Volume

RAW_DTYPES = ("uint8", "uint16", "int16", "float32")
DIRECTION_TOLERANCE = 1e-3
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def check_direction(direction: np.ndarray, where: str) -> np.ndarray:
    """`direction` as a float64 3x3, refusing one whose rows are not orthonormal."""
    matrix = np.asarray(direction, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise InvalidInputError(f"{where}: direction must be 3x3 finite numbers (9 values)")
    error = np.abs(matrix @ matrix.T - np.eye(3)).max()
    if error > DIRECTION_TOLERANCE:
        raise InvalidInputError(
            f"{where}: direction rows are not orthonormal unit vectors (off by {error:.4f}); "
            "send the column, row and slice axes' unit vectors in patient coordinates"
        )
    return matrix


def _check_voxels(shape: Sequence[int], max_voxels: int, where: str) -> tuple[int, int, int]:
    if len(shape) != 3 or min(int(s) for s in shape) < 1:
        raise InvalidInputError(
            f"{where}: shape must be three positive sizes (D, H, W), got {shape}"
        )
    total = int(np.prod([int(s) for s in shape], dtype=np.int64))
    if max_voxels > 0 and total > max_voxels:
        raise ImageTooLargeError(
            f"{where}: {total} voxels {tuple(shape)}; the limit is {max_voxels}"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def _check_spacing(spacing: Sequence[float], where: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InvalidInputError(
            f"{where}: spacing must be three positive mm values (slice, row, column), got {spacing}"
        )
    return values[0], values[1], values[2]


def volume_from_raw(
    data: bytes | memoryview,
    shape: Sequence[int],
    dtype: str,
    spacing: Sequence[float],
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: np.ndarray | Sequence[Sequence[float]] | None = None,
    max_voxels: int = 0,
    keep_integers: bool = False,
) -> Volume:
    """A volume from little-endian voxels [D, H, W] (C order, column fastest).

    `dtype` is one of uint8, uint16, int16, float32; `spacing` (slice, row, column) mm; `origin`
    the patient position of voxel [0, 0, 0]; `direction` rows the column, row and slice axes'
    unit vectors (identity when None). Sizes are checked before anything is allocated.

    `keep_integers`: integer voxels stay as sent (a read-only view of `data`, no float32 copy
    of the whole volume) for a caller that only preprocesses them (`VolumePipeline.preprocess`
    normalises a slice at a time into float32, the same values as from a float32 copy).
    """
    where = "raw volume"
    if dtype not in RAW_DTYPES:
        raise InvalidInputError(f"{where}: dtype {dtype!r}; use one of {', '.join(RAW_DTYPES)}")
    dims = _check_voxels(shape, max_voxels, where)
    kind = np.dtype(dtype).newbyteorder("<")
    expected = int(np.prod(dims, dtype=np.int64)) * kind.itemsize
    if len(data) != expected:
        raise InvalidInputError(
            f"{where}: {len(data)} bytes for shape {dims} of {dtype}; expected {expected}"
        )
    origin_mm = tuple(float(v) for v in origin)
    if len(origin_mm) != 3 or not all(np.isfinite(origin_mm)):
        raise InvalidInputError(f"{where}: origin must be three finite mm values (x, y, z)")
    matrix = check_direction(np.eye(3) if direction is None else np.asarray(direction), where)
    voxels = np.frombuffer(data, dtype=kind).reshape(dims)
    if not (keep_integers and voxels.dtype.kind in "iu"):
        voxels = voxels.astype(np.float32)
    if dtype == "float32" and not np.isfinite(voxels).all():  # integers always are
        raise InvalidInputError(f"{where}: voxels include NaN or infinity")
    return Volume(
        voxels=voxels,
        spacing_mm=_check_spacing(spacing, where),
        origin_mm=origin_mm,  # type: ignore[arg-type]
        direction=matrix,
    )


def volume_from_nifti(path: str | Path, max_voxels: int = 0) -> Volume:
    """A 3D NIfTI file (.nii or .nii.gz; a 4D one with a single volume too) as a `Volume`."""
    import nibabel  # noqa: PLC0415 - optional dependency, needed only here

    where = str(path)
    try:
        image = nibabel.load(where)
    except (OSError, nibabel.filebasedimages.ImageFileError) as exc:
        raise InvalidInputError(f"{where}: not a readable NIfTI file ({exc})") from exc
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InvalidInputError(f"{where}: a 3D image is needed, this one has shape {shape}")
    _check_voxels(shape[::-1], max_voxels, where)
    lps = _RAS_TO_LPS @ np.asarray(image.affine, dtype=np.float64)
    zooms = np.linalg.norm(lps[:3, :3], axis=0)  # i, j, k
    if not (zooms > 0).all():
        raise InvalidInputError(f"{where}: the affine has a zero-length axis")
    data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    return Volume(
        voxels=np.ascontiguousarray(data.transpose(2, 1, 0)),
        spacing_mm=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        origin_mm=tuple(float(v) for v in lps[:3, 3]),  # type: ignore[arg-type]
        direction=check_direction((lps[:3, :3] / zooms).T, where),
    )


def volume_to_nifti(volume: Volume, path: str | Path, voxels: np.ndarray | None = None) -> Path:
    """Write `volume` (or `voxels` [D, H, W] on its grid, e.g. a label mask) as NIfTI."""
    import nibabel  # noqa: PLC0415 - optional dependency, needed only here

    array = volume.voxels if voxels is None else np.asarray(voxels)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = nibabel.Nifti1Image(
        np.ascontiguousarray(array.transpose(2, 1, 0)), _RAS_TO_LPS @ volume.affine()
    )
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    out = Path(path)
    nibabel.save(image, str(out))
    return out
