"""DICOM decoding: modality LUT, VOI window, MONOCHROME1 inversion, header; single frame
(`decode_dicom`, `decode_dataset`) or every frame of a multi-frame object (`decode_frames`).

Every attribute the decoder needs is checked first (`dicom_pixels`, `dicom_elements`), the size
it announces is compared with the pixel and byte limits, and only then is the pixel data
decoded, from a data set that holds nothing but the checked pixel module. The greyscale rule
is `dicom_grey`'s. Errors name the attribute and what to fix, never an element's value.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import RLELossless

from vision.errors import InvalidInputError, UnsupportedFormatError
from vision.io import dicom_codecs
from vision.io.dicom_elements import MalformedElementError, decimals, first_item
from vision.io.dicom_file import read_part10
from vision.io.dicom_grey import GreyTransform, apply_grey, grey_transform, modality_values
from vision.io.dicom_header import DicomHeader, read_header
from vision.io.dicom_pixels import (
    PixelModule,
    check_limits,
    pixel_buffer,
    pixel_dataset,
    read_pixel_module,
)
from vision.io.headers import codestream_size
from vision.types import Image

log = logging.getLogger(__name__)


def _check_decodable(module: PixelModule) -> None:
    syntax = module.syntax
    if not syntax.is_compressed:
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


def _undecodable(exc: Exception) -> InvalidInputError:
    log.info("DICOM pixel data not decodable (%s)", type(exc).__name__)
    return InvalidInputError(
        f"DICOM pixel data could not be decoded ({type(exc).__name__}); the pixel data is "
        "truncated or corrupt, or does not match Rows, Columns and BitsAllocated"
    )


def _check_codestreams(ds: Dataset, module: PixelModule) -> None:
    """Each compressed frame must announce Rows x Columns, checked before it is decoded.

    A JPEG / JPEG-LS / JPEG 2000 codestream carries its own size, which decoders follow: a
    frame announcing 30000x30000 in an object of 2x2 would be decoded in full otherwise.
    """
    if not module.syntax.is_encapsulated or module.syntax == RLELossless:
        return
    value = ds.get_item(0x7FE00010, keep_deferred=True).value
    try:
        frames = list(generate_frames(value, number_of_frames=module.frames))
    except Exception as exc:  # noqa: BLE001 - malformed encapsulation
        raise _undecodable(exc) from None
    for frame in frames:
        size = codestream_size(bytes(frame[:65536]))
        if size != (module.columns, module.rows):
            raise InvalidInputError(
                "DICOM compressed frame does not announce the size Rows x Columns say "
                f"({module.columns}x{module.rows}); the pixel data is corrupt or does not "
                "belong to this header"
            )


def _iter_raw(ds: Dataset, module: PixelModule) -> Iterator[np.ndarray]:
    frames = dicom_codecs.frames(pixel_dataset(ds, module), module.syntax)
    while True:
        try:
            raw = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - decoders raise many types
            raise _undecodable(exc) from None
        expected = (module.rows, module.columns)
        if raw.shape[:2] != expected:
            raise InvalidInputError(
                "DICOM pixel data decodes to a frame whose size differs from Rows x Columns"
            )
        yield raw


def _colour(module: PixelModule, raw: np.ndarray) -> np.ndarray:
    if raw.ndim != 3 or raw.shape[2] != 3:
        raise UnsupportedFormatError(
            f"DICOM photometric interpretation {module.photometric} with pixel shape "
            f"{list(raw.shape)} is not supported; use MONOCHROME1/2 or RGB"
        )
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    top = 2.0**module.bits_stored - 1
    return np.clip(raw.astype(np.float64) * (255.0 / top), 0, 255).round().astype(np.uint8)


def _frame_pixels(module: PixelModule, raw: np.ndarray, transform: GreyTransform | None):
    if transform is None:
        return _colour(module, raw)
    if raw.ndim != 2:
        raise UnsupportedFormatError(
            f"DICOM frame of shape {list(raw.shape)} is not a single grey frame"
        )
    return apply_grey(transform, module, raw)


def _transform(
    ds: Dataset, module: PixelModule, groups: list[Dataset], window: bool
) -> GreyTransform | None:
    """The grey transform of a frame (checked before any pixel is decoded); None for colour."""
    return grey_transform(ds, groups, module, window) if module.grey else None


def _safe_floats(ds: Dataset | None, keyword: str, count: int) -> tuple[float, ...] | None:
    """`count` numbers of a geometry attribute, None when absent or malformed (never raises)."""
    if ds is None:
        return None
    try:
        values = decimals(ds, keyword)
    except InvalidInputError:
        return None
    return tuple(values) if values is not None and len(values) == count else None


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _safe_floats(ds, keyword, 2)
        if value is not None:
            return value  # type: ignore[return-value]
    return None


def _prepare(ds: Dataset, max_pixels: int) -> PixelModule:
    """Every check that needs no decoding: module, limits, decoder, pixel data, codestreams."""
    module = read_pixel_module(ds)
    check_limits(module, max_pixels)
    _check_decodable(module)
    pixel_buffer(ds, module)  # the checks; a view is not copied
    _check_codestreams(ds, module)
    return module


def decode_dicom(data: bytes, max_pixels: int = 0, window: bool = True) -> Image:
    """Decode a single-frame DICOM Part 10 file into an `Image` (see `decode_dataset`).

    A deflated data set is inflated only up to the byte limit of `max_pixels`.
    """
    if not data:
        raise InvalidInputError("empty image")
    ds = read_part10(bytes(data), max_pixels)
    return decode_dataset(ds, max_pixels=max_pixels, window=window)


def decode_dataset(ds: Dataset, max_pixels: int = 0, window: bool = True) -> Image:
    """Decode a single-frame pydicom Dataset already in memory into an `Image`.

    Greyscale: the rule of `vision.io.dicom_grey` (modality LUT or rescale; the VOI LUT or
    first window when `window` and present, else the full stored range; MONOCHROME1
    inverted); float32 HxWx1 on 0..255. Colour: RGB uint8 HxWx3. `pixel_spacing_mm` from
    PixelSpacing or ImagerPixelSpacing; `dicom` holds the header (`DicomHeader`: UIDs,
    patient/study attributes, geometry). Compressed pixel data needs
    `ds.file_meta.TransferSyntaxUID` (a received dataset has it from its presentation context).
    """
    module = _prepare(ds, max_pixels)
    if module.frames > 1:
        raise UnsupportedFormatError(
            f"multi-frame DICOM ({module.frames} frames) is not supported; send one frame per "
            "request"
        )
    transform = _transform(ds, module, [], window)
    (raw,) = list(_iter_raw(ds, module))
    pixels = _frame_pixels(module, raw, transform)
    return Image(
        pixels=pixels, source_format="dicom", pixel_spacing_mm=_spacing(ds), dicom=read_header(ds)
    )


# Multi-frame decoding ------------------------------------------------------------------------

# A frame's functional group items that hold what the grey rule reads (Enhanced CT / MR).
_FRAME_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def _frame_groups(ds: Dataset, index: int) -> list[Dataset]:
    """The functional group items that apply to frame `index` (0-based): shared, then own."""
    groups = []
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        groups.append(shared)
    if "PerFrameFunctionalGroupsSequence" in ds:
        try:
            per_frame = ds.PerFrameFunctionalGroupsSequence
        except Exception:  # noqa: BLE001 - pydicom's text may quote values
            raise MalformedElementError(
                "DICOM PerFrameFunctionalGroupsSequence is not a readable sequence"
            ) from None
        if index < len(per_frame):
            groups.append(per_frame[index])
    return groups


def _group_items(groups: list[Dataset], sequence: str) -> list[Dataset]:
    """`sequence[0]` of each group that has it, in order."""
    items = []
    for group in groups:
        item = first_item(group, sequence)
        if item is not None:
            items.append(item)
    return items


def _group_floats(groups: list[Dataset], sequence: str, keyword: str, count: int):
    """`keyword` in `sequence[0]` of the last group that has it well formed (own over shared)."""
    value = None
    for item in _group_items(groups, sequence):
        found = _safe_floats(item, keyword, count)
        if found is not None:
            value = found
    return value


def _frame_header(header: DicomHeader, groups: list[Dataset], number: int) -> DicomHeader:
    """`header` for frame `number` (1-based), with that frame's geometry where it has one."""
    spacing = _group_floats(groups, "PixelMeasuresSequence", "PixelSpacing", 2)
    thickness = _group_floats(groups, "PixelMeasuresSequence", "SliceThickness", 1)
    position = _group_floats(groups, "PlanePositionSequence", "ImagePositionPatient", 3)
    orientation = _group_floats(groups, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
    return dataclasses.replace(
        header,
        frames=(number,),
        pixel_spacing_mm=spacing or header.pixel_spacing_mm,
        slice_thickness_mm=thickness[0] if thickness else header.slice_thickness_mm,
        image_position_patient=position or header.image_position_patient,
        image_orientation_patient=orientation or header.image_orientation_patient,
    )


def decode_frames(ds: Dataset, max_pixels: int = 0, window: bool = True) -> list[Image]:
    """Every frame of a (multi- or single-frame) dataset as an `Image`, in frame order.

    Each frame follows `decode_dataset`'s rules (modality LUT, VOI window when `window`,
    MONOCHROME1 inverted; colour as RGB uint8), with the Enhanced CT / MR functional groups'
    Pixel Value Transformation and Frame VOI LUT of that frame where present. Each Image's
    `dicom` header has `frames=(n,)` (1-based) and that frame's spacing, thickness, position
    and orientation from the per-frame (else shared) functional groups. `max_pixels` (0: no
    limit) applies to rows * columns * frames, checked before decoding.
    """
    module = _prepare(ds, max_pixels)
    header = read_header(ds)
    groups = [_frame_groups(ds, index) for index in range(module.frames)]
    items = [[i for name in _FRAME_GROUPS for i in _group_items(g, name)] for g in groups]
    transforms = [_transform(ds, module, frame_items, window) for frame_items in items]
    images = []
    for index, raw in enumerate(_iter_raw(ds, module)):
        frame_header = _frame_header(header, groups[index], index + 1)
        pixels = _frame_pixels(module, raw, transforms[index])
        spacing = frame_header.pixel_spacing_mm or _spacing(ds)
        images.append(
            Image(
                pixels=pixels, source_format="dicom", pixel_spacing_mm=spacing, dicom=frame_header
            )
        )
    if len(images) != module.frames:
        raise InvalidInputError(f"DICOM pixel data holds {len(images)} of {module.frames} frames")
    return images


def modality_frames(ds: Dataset, max_pixels: int = 0) -> Iterator[np.ndarray]:
    """Each frame's stored values through its modality transform, float32, in frame order.

    The Modality LUT or rescale of each frame (per-frame functional groups over the shared
    ones over the top level), without VOI: the values a volume keeps (HU for CT). Checked as
    `decode_frames` checks (`max_pixels` on rows * columns * frames, before decoding).
    """
    module = _prepare(ds, max_pixels)
    for index, raw in enumerate(_iter_raw(ds, module)):
        groups = _frame_groups(ds, index)
        items = _group_items(groups, "PixelValueTransformationSequence")
        transform = grey_transform(ds, items, module, window=False)
        yield modality_values(transform, raw).astype(np.float32)
