"""DICOM decoding: modality LUT, VOI window, MONOCHROME1 inversion, header; single frame
(`decode_dicom`, `decode_dataset`) or every frame of a multi-frame object (`decode_frames`)."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder, iter_pixels

from vision.errors import ImageTooLargeError, InvalidInputError, UnsupportedFormatError
from vision.io.dicom_header import DicomHeader, read_header
from vision.io.limits import check_max_pixels
from vision.types import Image

log = logging.getLogger(__name__)

_GREY = ("MONOCHROME1", "MONOCHROME2")


def _read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise InvalidInputError(f"not a valid DICOM file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on truncated/corrupt headers
        raise InvalidInputError(
            f"DICOM header could not be read ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt, send the complete file"
        ) from exc


def _check_dataset(ds: Dataset, max_pixels: int) -> None:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InvalidInputError("DICOM file has no pixel data (is it an image object?)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedFormatError(
            f"multi-frame DICOM ({frames} frames) is not supported; send one frame per request"
        )
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if rows is None or columns is None:
        raise InvalidInputError("DICOM file lacks Rows/Columns")
    check_max_pixels(int(columns), int(rows), max_pixels)


def _check_decodable(ds: Dataset) -> None:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        raise UnsupportedFormatError(
            f"DICOM transfer syntax {syntax.name} cannot be decoded on this server; send "
            "uncompressed, RLE, JPEG baseline, JPEG-LS or JPEG 2000 data"
        )


def _pixel_array(ds: Dataset) -> np.ndarray:
    _check_decodable(ds)
    try:
        return ds.pixel_array
    except Exception as exc:
        raise InvalidInputError(
            f"DICOM pixel data could not be decoded ({type(exc).__name__}: {exc}); "
            "the pixel data is truncated or corrupt"
        ) from exc


def _window_range(ds: Dataset) -> tuple[float, float]:
    """The output range of pydicom's windowing for this dataset (PS3.3 C.11.2.1.2)."""
    bits = int(ds.get("BitsStored", 16))
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, 2.0**bits - 1
    else:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return min(lo, hi), max(lo, hi)


def _to_255(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0.0, 255.0).astype(np.float32)


def _apply_voi(ds: Dataset, values: np.ndarray) -> np.ndarray | None:
    """VOI LUT or window mapped to 0..255, or None when the file has neither (or a bad one)."""
    if ds.get("VOILUTSequence"):
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
        try:
            out = apply_voi_lut(values, ds, index=0)
        except Exception as exc:
            log.warning("ignoring unusable DICOM VOI LUT: %s", exc)
            return None
        return _to_255(out, float(lut.min()), float(lut.max()))
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            out = apply_voi_lut(values, ds, index=0)
        except Exception as exc:
            log.warning("ignoring unusable DICOM window: %s", exc)
            return None
        return _to_255(out, *_window_range(ds))
    return None


def _grey(ds: Dataset, raw: np.ndarray, window: bool) -> np.ndarray:
    values = apply_modality_lut(raw, ds).astype(np.float64)
    out = _apply_voi(ds, values) if window else None
    if out is None:
        out = _to_255(values, float(values.min()), float(values.max()))
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 255.0 - out
    return out.astype(np.float32)[:, :, None]


def _colour(ds: Dataset, raw: np.ndarray) -> np.ndarray:
    if raw.ndim != 3 or raw.shape[2] != 3:
        raise UnsupportedFormatError(
            f"DICOM photometric interpretation {ds.PhotometricInterpretation} with pixel shape "
            f"{list(raw.shape)} is not supported; use MONOCHROME1/2 or RGB"
        )
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    top = 2.0 ** int(ds.get("BitsStored", 16)) - 1
    return np.clip(raw.astype(np.float64) * (255.0 / top), 0, 255).round().astype(np.uint8)


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                return float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
    return None


def decode_dicom(data: bytes, max_pixels: int = 0, window: bool = True) -> Image:
    """Decode a single-frame DICOM Part 10 file into an `Image` (see `decode_dataset`)."""
    if not data:
        raise InvalidInputError("empty image")
    return decode_dataset(_read(bytes(data)), max_pixels=max_pixels, window=window)


def decode_dataset(ds: Dataset, max_pixels: int = 0, window: bool = True) -> Image:
    """Decode a single-frame pydicom Dataset already in memory into an `Image`.

    Greyscale: modality LUT (rescale slope/intercept), then the VOI LUT or first window when
    `window` and present (else min-max), MONOCHROME1 inverted; float32 HxWx1 on 0..255.
    Colour: RGB uint8 HxWx3. `pixel_spacing_mm` from PixelSpacing or ImagerPixelSpacing;
    `dicom` holds the header (`DicomHeader`: UIDs, patient/study attributes, geometry).
    Compressed pixel data needs `ds.file_meta.TransferSyntaxUID` (a received dataset has it
    from its presentation context).
    """
    _check_dataset(ds, max_pixels)
    raw = _pixel_array(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric in _GREY:
        if raw.ndim != 2:
            raise UnsupportedFormatError(
                f"DICOM pixel array of shape {list(raw.shape)} is not a single grey frame"
            )
        pixels = _grey(ds, raw, window)
    else:
        pixels = _colour(ds, raw)
    return Image(
        pixels=pixels, source_format="dicom", pixel_spacing_mm=_spacing(ds), dicom=read_header(ds)
    )


# Multi-frame decoding ------------------------------------------------------------------------

# The attributes the grey path reads; a frame's view holds them, overridden by its functional
# groups' Pixel Value Transformation and Frame VOI LUT (Enhanced CT / MR).
_GREY_KEYWORDS = (
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)
_FRAME_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def _frame_groups(ds: Dataset, index: int) -> list[Dataset]:
    """The functional group items that apply to frame `index` (0-based): shared, then own."""
    groups = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    return groups


def _frame_view(ds: Dataset, groups: list[Dataset]) -> Dataset:
    """A small dataset with what `_grey` reads, for one frame."""
    view = Dataset()
    for keyword in _GREY_KEYWORDS:
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    for group in groups:
        for sequence in _FRAME_GROUPS:
            items = group.get(sequence)
            if not items:
                continue
            for element in items[0]:
                if element.keyword in _GREY_KEYWORDS:
                    setattr(view, element.keyword, element.value)
    return view


def _group_value(groups: list[Dataset], sequence: str, keyword: str) -> object:
    """`keyword` in `sequence[0]` of the last group that has it (own frame over shared)."""
    value = None
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0]:
            value = items[0].get(keyword)
    return value


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        items = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return items if len(items) == count else None


def _frame_header(header: DicomHeader, groups: list[Dataset], number: int) -> DicomHeader:
    """`header` for frame `number` (1-based), with that frame's geometry where it has one."""
    spacing = _floats(_group_value(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
    thickness = _group_value(groups, "PixelMeasuresSequence", "SliceThickness")
    position = _floats(_group_value(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
    orientation = _floats(
        _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
    )
    try:
        thickness_mm = float(thickness) if thickness is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        thickness_mm = None
    return dataclasses.replace(
        header,
        frames=(number,),
        pixel_spacing_mm=spacing or header.pixel_spacing_mm,
        slice_thickness_mm=thickness_mm if thickness_mm is not None else header.slice_thickness_mm,
        image_position_patient=position or header.image_position_patient,
        image_orientation_patient=orientation or header.image_orientation_patient,
    )


def _check_frames(ds: Dataset, max_pixels: int) -> int:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InvalidInputError("DICOM file has no pixel data (is it an image object?)")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if rows is None or columns is None:
        raise InvalidInputError("DICOM file lacks Rows/Columns")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError("DICOM NumberOfFrames is not a number") from exc
    if frames < 1:
        raise InvalidInputError(f"DICOM NumberOfFrames is {frames}")
    total = int(rows) * int(columns) * frames
    if max_pixels > 0 and total > max_pixels:
        raise ImageTooLargeError(
            f"DICOM object is {frames} frame(s) of {columns}x{rows} = {total} pixels; "
            f"the limit is {max_pixels}"
        )
    return frames


def _frame_pixels(ds: Dataset, raw: np.ndarray, view: Dataset, window: bool) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in _GREY:
        return _colour(ds, raw)
    if raw.ndim != 2:
        raise UnsupportedFormatError(
            f"DICOM frame of shape {list(raw.shape)} is not a single grey frame"
        )
    return _grey(view, raw, window)


def _iter_raw(ds: Dataset) -> Iterator[np.ndarray]:
    _check_decodable(ds)
    frames = iter_pixels(ds)
    while True:
        try:
            raw = next(frames)
        except StopIteration:
            return
        except Exception as exc:
            raise InvalidInputError(
                f"DICOM pixel data could not be decoded ({type(exc).__name__}: {exc}); "
                "the pixel data is truncated or corrupt"
            ) from exc
        yield raw


def decode_frames(ds: Dataset, max_pixels: int = 0, window: bool = True) -> list[Image]:
    """Every frame of a (multi- or single-frame) dataset as an `Image`, in frame order.

    Each frame follows `decode_dataset`'s rules (modality LUT, VOI window when `window`,
    MONOCHROME1 inverted; colour as RGB uint8), with the Enhanced CT / MR functional groups'
    Pixel Value Transformation and Frame VOI LUT of that frame where present. Each Image's
    `dicom` header has `frames=(n,)` (1-based) and that frame's spacing, thickness, position
    and orientation from the per-frame (else shared) functional groups. `max_pixels` (0: no
    limit) applies to rows * columns * frames.
    """
    frames = _check_frames(ds, max_pixels)
    header = read_header(ds)
    images = []
    for index, raw in enumerate(_iter_raw(ds)):
        groups = _frame_groups(ds, index)
        frame_header = _frame_header(header, groups, index + 1)
        pixels = _frame_pixels(ds, raw, _frame_view(ds, groups), window)
        spacing = frame_header.pixel_spacing_mm or _spacing(ds)
        images.append(
            Image(
                pixels=pixels, source_format="dicom", pixel_spacing_mm=spacing, dicom=frame_header
            )
        )
    if len(images) != frames:
        raise InvalidInputError(f"DICOM pixel data holds {len(images)} of {frames} frames")
    return images
