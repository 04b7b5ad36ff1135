"""A DICOM series (single-frame instances and/or Enhanced multi-frame objects) as a `Volume`.

Slices are ordered by ImagePositionPatient projected on the normal of ImageOrientationPatient
(never by InstanceNumber or file order); the slice spacing comes from those positions (not
SliceThickness), the row and column spacing from PixelSpacing. The modality LUT (rescale
slope/intercept, per frame in Enhanced objects) is applied; no VOI window. A series that is not
one regular grid is refused with `InvalidInputError` naming the problem: instances of several
series or frames of reference, missing geometry, slices of different sizes or pixel spacing,
mixed orientations, duplicated positions, gaps (uneven spacing), gantry tilt. A single slice is
accepted, with SliceThickness (else 1 mm) as its spacing and a note saying so.

`volume_from_nifti` and `volume_from_raw` (in `vision.volume.sources`) are re-exported here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from vision.errors import ImageTooLargeError, InvalidInputError, VisionError
from vision.io.dicom import _frame_groups, _frame_header, _group_items, _prepare, modality_frames
from vision.io.dicom_grey import grey_transform, modality_values
from vision.io.dicom_header import DicomHeader, read_header
from vision.io.dicom_pixels import PixelModule, pixel_buffer
from vision.volume.sources import volume_from_nifti, volume_from_raw
from vision.volume.types import Volume

__all__ = ["volume_from_datasets", "volume_from_nifti", "volume_from_raw"]

ORIENTATION_TOLERANCE = 1e-4  # per direction-cosine component
POSITION_TOLERANCE_MM = 0.01  # absolute floor of the spacing/tilt tolerances
RELATIVE_TOLERANCE = 0.01  # 1 % of the slice spacing


@dataclass(frozen=True)
class _Slice:
    """One frame of one input dataset, before its pixels are decoded."""

    dataset: int  # index in the input
    frame: int  # 0-based frame index in that dataset
    header: DicomHeader

    @property
    def name(self) -> str:
        where = f"instance {self.dataset + 1}"
        return (
            where
            if self.header.number_of_frames in (None, 1)
            else f"{where} frame {self.frame + 1}"
        )


def _frames_of(index: int, ds: Dataset) -> list[_Slice]:
    header = read_header(ds)
    count = header.number_of_frames or 1
    if count == 1:
        return [_Slice(index, 0, header)]
    return [
        _Slice(index, i, _frame_header(header, _frame_groups(ds, i), i + 1)) for i in range(count)
    ]


def _check_same_series(slices: list[_Slice]) -> None:
    for attribute, keyword in (
        ("series_instance_uid", "SeriesInstanceUID"),
        ("frame_of_reference_uid", "FrameOfReferenceUID"),
    ):
        values = {getattr(s.header.reference, attribute) for s in slices}
        if len(values) > 1:
            raise InvalidInputError(
                f"the instances belong to {len(values)} different {keyword}s; a volume is one "
                "series in one frame of reference: send each series on its own"
            )


def _check_geometry(slices: list[_Slice]) -> None:
    needs = (
        ("image_position_patient", "ImagePositionPatient", "PlanePositionSequence"),
        ("image_orientation_patient", "ImageOrientationPatient", "PlaneOrientationSequence"),
        ("pixel_spacing_mm", "PixelSpacing", "PixelMeasuresSequence"),
    )
    for s in slices:
        for attribute, keyword, group in needs:
            if getattr(s.header, attribute) is None:
                raise InvalidInputError(
                    f"missing geometry: {s.name} has no {keyword} (nor a {group} in its "
                    "functional groups); a volume needs the position, orientation and pixel "
                    "spacing of every slice"
                )
        if s.header.samples_per_pixel not in (None, 1):
            raise InvalidInputError(f"{s.name} is colour; volumes are greyscale (one sample)")


def _check_uniform(slices: list[_Slice], what: str, key: Callable[[DicomHeader], object]) -> None:
    values = Counter(key(s.header) for s in slices)
    if len(values) > 1:
        listed = ", ".join(f"{v} ({n} slices)" for v, n in values.most_common())
        raise InvalidInputError(f"slices of different {what}: {listed}; send one regular grid")


def _orientation(slices: list[_Slice]) -> np.ndarray:
    """The common [row direction, column direction, normal], refusing mixed orientations."""
    first = np.asarray(slices[0].header.image_orientation_patient, dtype=np.float64)
    for s in slices[1:]:
        other = np.asarray(s.header.image_orientation_patient, dtype=np.float64)
        if np.abs(other - first).max() > ORIENTATION_TOLERANCE:
            raise InvalidInputError(
                f"mixed orientations: {s.name} has ImageOrientationPatient "
                f"{other.round(4).tolist()}, {slices[0].name} {first.round(4).tolist()}; "
                "a volume has one orientation"
                " (send each stack, e.g. a localizer's planes, as its own series)"
            )
    row, col = first[:3], first[3:]
    lengths = (abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(col) - 1), abs(row @ col))
    if max(lengths) > 1e-3:
        raise InvalidInputError(
            f"ImageOrientationPatient {first.tolist()} is not two orthogonal unit vectors"
        )
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return np.stack([row, col, np.cross(row, col)])


def _sorted(slices: list[_Slice], normal: np.ndarray) -> tuple[list[_Slice], np.ndarray]:
    """Slices in ascending order along the normal, and their positions (mm, patient)."""
    positions = np.array([s.header.image_position_patient for s in slices], dtype=np.float64)
    order = np.argsort(positions @ normal, kind="stable")
    return [slices[i] for i in order], positions[order]


def _slice_spacing(slices: list[_Slice], positions: np.ndarray, normal: np.ndarray) -> float:
    """The uniform spacing along the normal, refusing duplicates, gantry tilt and gaps."""
    steps = positions[1:] - positions[:-1]
    along = steps @ normal
    for i, step in enumerate(along):
        if step < POSITION_TOLERANCE_MM:
            raise InvalidInputError(
                f"duplicated position: {slices[i].name} and {slices[i + 1].name} are both at "
                f"{positions[i].round(3).tolist()} mm; a volume has one slice per position "
                "(several echoes, phases or acquisitions? send one of them per series)"
            )
    spacing = float(np.median(along))
    tolerance = max(POSITION_TOLERANCE_MM, RELATIVE_TOLERANCE * spacing)
    across = np.linalg.norm(steps - along[:, None] * normal, axis=1)
    if across.max() > tolerance:
        i = int(across.argmax())
        angle = float(np.degrees(np.arctan2(across[i], along[i])))
        raise InvalidInputError(
            f"gantry tilt: the slice positions are not along the orientation's normal "
            f"({slices[i].name} to {slices[i + 1].name}: {across[i]:.3f} mm across per "
            f"{along[i]:.3f} mm along, {angle:.2f}°); resample the tilted series to an "
            "orthogonal grid before sending it"
        )
    uneven = np.abs(along - spacing) > tolerance
    if uneven.any():
        i = int(np.argmax(uneven))
        raise InvalidInputError(
            f"gap or uneven spacing: {slices[i].name} at {positions[i].round(3).tolist()} mm "
            f"and {slices[i + 1].name} at {positions[i + 1].round(3).tolist()} mm are "
            f"{along[i]:.3f} mm apart, the series' spacing is {spacing:.3f} mm (tolerance "
            f"{tolerance:.3f} mm); send the complete series"
        )
    return spacing


def _check_size(slices: list[_Slice], max_voxels: int) -> tuple[int, int]:
    rows, columns = slices[0].header.rows or 0, slices[0].header.columns or 0
    total = rows * columns * len(slices)
    if max_voxels > 0 and total > max_voxels:
        raise ImageTooLargeError(
            f"the series is {len(slices)} slices of {columns}x{rows} = {total} voxels; "
            f"the limit is {max_voxels}"
        )
    return rows, columns


_NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def native_stored(ds: Dataset, module: PixelModule) -> np.ndarray | None:
    """The stored values [frames, rows, columns] of uncompressed little-endian grey pixel data
    of 8 or 16 bits, read straight from PixelData as pydicom's native decoder reads it (the
    bits above BitsStored ignored, signed values sign-extended); None for anything else
    (compressed, big-endian, colour, 1 or 32 bits), which goes through pydicom. `module` is
    `vision.io.dicom._prepare`'s: every check has been made."""
    if module.syntax not in _NATIVE_SYNTAXES or not module.grey or module.samples != 1:
        return None
    if module.bits_allocated not in (8, 16):
        return None
    dtype = np.dtype(f"<{'ui'[module.pixel_representation]}{module.bits_allocated // 8}")
    stored = np.frombuffer(pixel_buffer(ds, module), dtype, count=module.pixels)
    shift = module.bits_allocated - module.bits_stored
    if shift:
        stored = np.right_shift(np.left_shift(stored, shift), shift)
    return stored.reshape(module.frames, module.rows, module.columns)


def _integral_intercept(transform) -> int | None:
    """The intercept when the modality transform is stored value + an integer (no LUT, slope
    1): then the values are integers, exact in float32; None otherwise."""
    exact = transform.modality_lut is None and transform.slope == 1.0
    if exact and float(transform.intercept).is_integer() and abs(transform.intercept) < 2**23:
        return int(transform.intercept)
    return None


def _modality_transform(ds: Dataset, module: PixelModule, frame: int):
    items = _group_items(_frame_groups(ds, frame), "PixelValueTransformationSequence")
    return grey_transform(ds, items, module, window=False)


def _modality_into(out: np.ndarray, ds: Dataset, module: PixelModule, frame: int, raw) -> None:
    """`raw`'s stored values through the frame's modality transform into float32 `out`: the
    values `modality_frames` gives (integers plus an integral intercept are exact in float32)."""
    transform = _modality_transform(ds, module, frame)
    intercept = _integral_intercept(transform)
    if intercept is not None:
        np.add(raw, np.float32(intercept), out=out, dtype=np.float32)
    else:
        out[...] = modality_values(transform, raw)


def _frames(ds: Dataset):
    """(frame index, float32 modality values) of `ds`: the native fast path or pydicom's."""
    module = _prepare(ds, 0)
    stored = native_stored(ds, module)
    if stored is None:
        yield from enumerate(modality_frames(ds))
        return
    for frame in range(module.frames):
        values = np.empty(stored.shape[1:], np.float32)
        _modality_into(values, ds, module, frame, stored[frame])
        yield frame, values


def _decode(
    datasets: Sequence[Dataset], slices: list[_Slice], shape: tuple[int, int]
) -> np.ndarray:
    """float32 [D, H, W] with each frame's modality LUT applied, in the order of `slices`."""
    voxels = np.empty((len(slices), *shape), dtype=np.float32)
    where = {(s.dataset, s.frame): k for k, s in enumerate(slices)}
    for index in sorted({s.dataset for s in slices}):
        ds = datasets[index]
        for frame, values in _frames(ds):
            if values.shape != shape:
                raise InvalidInputError(
                    f"instance {index + 1} frame {frame + 1} has pixels of shape "
                    f"{list(values.shape)}, not one grey frame of {list(shape)}"
                )
            voxels[where[(index, frame)]] = values
    return voxels


@dataclass(frozen=True)
class _Stored:
    """One dataset's stored values [frames, H, W] (a view of its pixel data), their range by
    BitsStored, and each frame's integral intercept."""

    index: int
    values: np.ndarray
    low: int
    high: int
    intercepts: tuple[int, ...]


def _stored_of(index: int, ds: Dataset, shape: tuple[int, int]) -> _Stored | None:
    """`ds`'s stored values when they are native and every frame's modality transform adds an
    integer; None otherwise (the float32 decode then reads it, and refuses what it refuses)."""
    module = _prepare(ds, 0)
    values = native_stored(ds, module)
    if values is None or values.shape[1:] != shape:
        return None
    intercepts = [
        _integral_intercept(_modality_transform(ds, module, f)) for f in range(len(values))
    ]
    if any(i is None for i in intercepts):
        return None
    bits = module.bits_stored
    low, high = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if module.pixel_representation
        else (0, 2**bits - 1)
    )
    return _Stored(index, values, low, high, tuple(intercepts))  # type: ignore[arg-type]


def _holding_type(stored: list[_Stored]) -> np.dtype | None:
    """The first of (the stored type, int16, uint16) that holds every stored value and every
    value after its intercept; None when none does."""
    for dtype in (stored[0].values.dtype, np.dtype(np.int16), np.dtype(np.uint16)):
        info = np.iinfo(dtype)
        if all(  # the intercepts' range widened by 0 covers the stored values too
            info.min <= s.low + min(0, *s.intercepts) and s.high + max(0, *s.intercepts) <= info.max
            for s in stored
        ):
            return dtype
    return None


def _integer_decode(
    datasets: Sequence[Dataset], slices: list[_Slice], shape: tuple[int, int]
) -> np.ndarray | None:
    """The volume as integers [D, H, W] (stored value + intercept: the float32 decode's values
    exactly) when every dataset allows it (`_stored_of`, `_holding_type`); else None."""
    try:
        stored = [_stored_of(i, datasets[i], shape) for i in sorted({s.dataset for s in slices})]
    except VisionError:  # the float32 decode raises it again, in its own order
        return None
    if not stored or any(s is None for s in stored):
        return None
    dtype = _holding_type(stored)  # type: ignore[arg-type]
    if dtype is None:
        return None
    where = {(s.dataset, s.frame): k for k, s in enumerate(slices)}
    frames = {(s.index, f) for s in stored for f in range(len(s.values))}  # type: ignore[union-attr]
    if len(where) != len(slices) or set(where) != frames:
        return None
    voxels = np.empty((len(slices), *shape), dtype=dtype)
    for item in stored:
        for frame, intercept in enumerate(item.intercepts):  # type: ignore[union-attr]
            out = voxels[where[(item.index, frame)]]  # type: ignore[union-attr]
            if intercept:
                np.add(item.values[frame], intercept, out=out, dtype=dtype, casting="unsafe")
            else:
                np.copyto(out, item.values[frame], casting="unsafe")
    return voxels


def _voxels(
    datasets: Sequence[Dataset], slices: list[_Slice], shape: tuple[int, int], integers: bool
) -> np.ndarray:
    voxels = _integer_decode(datasets, slices, shape) if integers else None
    return _decode(datasets, slices, shape) if voxels is None else voxels


def _single_slice_spacing(header: DicomHeader) -> tuple[float, str]:
    if header.slice_thickness_mm and header.slice_thickness_mm > 0:
        return header.slice_thickness_mm, "a single slice: its SliceThickness is the slice spacing"
    return 1.0, "a single slice without SliceThickness: a slice spacing of 1 mm is assumed"


def volume_from_datasets(
    datasets: Sequence[Dataset], max_voxels: int = 0, keep_integers: bool = False
) -> Volume:
    """The volume of one DICOM series given as its instances (any order).

    `max_voxels` (0: no limit) bounds rows * columns * slices before any pixel is decoded.
    Raises `InvalidInputError` naming the problem when the instances are not one regular grid.
    Voxels are float32, or with `keep_integers` (the server's `assemble`) integers where every
    instance is uncompressed with an integral intercept and no LUT (`_integer_decode`: the same
    values, in the stored type, int16 or uint16: no float32 copy of the volume; the
    normalisation casts a slice at a time, as for a raw integer volume).
    """
    if not datasets:
        raise InvalidInputError("no instances: a volume needs at least one DICOM image")
    slices = [s for i, ds in enumerate(datasets) for s in _frames_of(i, ds)]
    _check_same_series(slices)
    _check_geometry(slices)
    _check_uniform(slices, "sizes (rows, columns)", lambda h: (h.rows, h.columns))
    _check_uniform(slices, "PixelSpacing", lambda h: h.pixel_spacing_mm)
    direction = _orientation(slices)
    slices, positions = _sorted(slices, direction[2])
    notes: tuple[str, ...] = ()
    if len(slices) == 1:
        spacing, note = _single_slice_spacing(slices[0].header)
        notes = (note,)
    else:
        spacing = _slice_spacing(slices, positions, direction[2])
    shape = _check_size(slices, max_voxels)
    row_mm, col_mm = slices[0].header.pixel_spacing_mm  # type: ignore[misc]
    return Volume(
        voxels=_voxels(datasets, slices, shape, keep_integers),
        spacing_mm=(spacing, float(row_mm), float(col_mm)),
        origin_mm=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=direction,
        slices=tuple(s.header for s in slices),
        source_frames=tuple(
            (s.header.reference.sop_instance_uid or "", s.header.frames[0]) for s in slices
        ),
        notes=notes,
    )
