"""Decode encoded images (sniffed by magic bytes) and raw pixel buffers into `Image`."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vision.errors import InvalidInputError
from vision.io.headers import jpeg_scan
from vision.io.limits import check_decoded_bytes, check_max_pixels
from vision.io.sniff import SUPPORTED_FORMATS, sniff_format, unsupported_error
from vision.types import Image

if TYPE_CHECKING:
    from PIL import TiffImagePlugin

__all__ = [
    "SUPPORTED_FORMATS",
    "check_max_pixels",
    "decode_image",
    "image_from_raw",
    "read_image",
    "sniff_format",
    "to_uint8",
]

_RAW_DTYPES = ("uint8", "uint16", "float32")
_BIGTIFF = (b"+\x00", b"\x00+")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _tiff_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, decoded bytes) of the first page of a TIFF or BigTIFF, else None.

    Pillow's IFD parser reads the header and the first directory's tags only: no pixel is
    decoded, and no mode is resolved, so any samples-and-bits combination is measured.
    """
    from PIL import TiffImagePlugin  # first TIFF only: Pillow's TIFF plugin is not needed to start

    try:
        fp = io.BytesIO(data)
        ifd = TiffImagePlugin.ImageFileDirectory_v2(fp.read(16 if data[2:4] in _BIGTIFF else 8))
        fp.seek(ifd.next)
        ifd.load(fp)
        width, height = int(ifd[256]), int(ifd[257])
        if not _tiff_data_fits(ifd, len(data)):
            return None
        samples = int(ifd.get(277, 1))
        bits = ifd.get(258, (8,))
        depth = max(int(b) for b in bits) if isinstance(bits, tuple | list) else int(bits)
    except Exception:  # noqa: BLE001 - Pillow raises many types on a malformed header
        return None
    return width, height, (width * height * samples * max(1, depth) + 7) // 8


def _tiff_data_fits(ifd: TiffImagePlugin.ImageFileDirectory_v2, size: int) -> bool:
    """Every strip or tile the first IFD points to lies inside the data."""
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):
        offsets, counts = ifd.get(offsets_tag, ()), ifd.get(counts_tag, ())
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        if any(int(o) + int(c) > size for o, c in zip(offsets, counts, strict=False)):
            return False
    return True


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _header_size(fmt: str, data: bytes) -> tuple[int, int, int | None] | None:
    """(width, height, decoded bytes if more than the pixels imply) the header announces.

    None when the header cannot be read: such data is refused, never decoded blind. PNG
    (16-bit RGBA at most), JPEG and BMP decode to at most `BYTES_PER_PIXEL` bytes a pixel, so
    their pixel count bounds their bytes; a TIFF page can hold more samples and bits.
    """
    if fmt == "tiff":
        return _tiff_size(data)
    size = _png_size(data) if fmt == "png" else jpeg_scan(data)[0] if fmt == "jpeg" else None
    if fmt == "bmp":
        try:
            size = _bmp_size(data)
        except struct.error:
            size = None
    return None if size is None else (size[0], size[1], None)


def _check_header(fmt: str, data: bytes, max_pixels: int) -> None:
    """Pixel and byte limits on the size the header announces, before any decoding."""
    size = _header_size(fmt, data)
    if size is None:
        raise InvalidInputError(
            f"{fmt.upper()} header does not say the image size (or is corrupt); send a "
            "complete, valid file"
        )
    width, height, decoded = size
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"{fmt.upper()} header announces an empty image ({width}x{height})")
    check_max_pixels(width, height, max_pixels)
    if decoded is not None:
        check_decoded_bytes(decoded, max_pixels, f"the {fmt.upper()} image")


def _png_chunks_fit(data: bytes) -> bool:
    """Every chunk up to IEND lies inside the data (OpenCV allocates what a length announces:
    an IDAT claiming 4 GiB in a 172-byte file took 18 s and 4 GB before failing)."""
    at = 8
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        if at + 12 + length > len(data):
            return False
        if data[at + 4 : at + 8] == b"IEND":
            return True
        at += 12 + length
    return False


def _check_complete(fmt: str, data: bytes) -> None:
    """Catch truncation that decoders would silently paper over, or pay for in memory."""
    if fmt == "png" and not _png_chunks_fit(data):
        raise InvalidInputError(
            f"PNG data is truncated or corrupt ({len(data)} bytes: a chunk runs past the end, "
            "or there is no IEND chunk); send the complete file"
        )
    if fmt == "jpeg":
        _, sos = jpeg_scan(data)
        if sos < 0 or data.find(b"\xff\xd9", sos) < 0:
            raise InvalidInputError(
                f"JPEG data is truncated or corrupt ({len(data)} bytes, no end-of-image marker "
                "after the scan); send the complete file"
            )


def _to_hwc_rgb(array: np.ndarray) -> np.ndarray:
    """cv2's decoded array (HxW, HxWx2/3/4, BGR order) as HxWx1 or HxWx3 RGB."""
    if array.ndim == 2:
        return array[:, :, None]
    channels = array.shape[2]
    if channels == 1:
        return array
    if channels == 2:  # grey + alpha
        return np.ascontiguousarray(array[:, :, :1])
    if channels == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(array[:, :, :4], cv2.COLOR_BGRA2RGB)


def _normalise_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return array
    return array.astype(np.float32)


def _decode_with_cv2(fmt: str, data: bytes) -> np.ndarray:
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        array = None
        detail = f": {exc.err}"
    else:
        detail = ""
    if array is None or array.size == 0:
        raise InvalidInputError(
            f"{fmt.upper()} data ({len(data)} bytes) could not be decoded{detail}; the file is "
            "truncated or corrupt, send the complete, valid file"
        )
    return array


def decode_image(data: bytes, max_pixels: int = 0, dicom_window: bool = True) -> Image:
    """Decode PNG, JPEG, TIFF, BMP or DICOM bytes into an `Image` (HxWxC, RGB order).

    uint8/uint16 are kept; DICOM becomes float32 on a 0..255 scale (see `decode_dicom`).
    The size the header announces is checked against `max_pixels` (0 = no limit) and the byte
    limit before decoding (a header that does not say it is refused), and again after.
    """
    if data is None or len(data) == 0:
        raise InvalidInputError("empty image")
    data = bytes(data)
    fmt = sniff_format(data)
    if fmt is None:
        raise unsupported_error(data)
    if fmt == "dicom":
        from vision.io.dicom import decode_dicom  # first DICOM only: pydicom is not needed to start

        return decode_dicom(data, max_pixels=max_pixels, window=dicom_window)
    _check_header(fmt, data, max_pixels)
    _check_complete(fmt, data)
    pixels = _normalise_dtype(_to_hwc_rgb(_decode_with_cv2(fmt, data)))
    check_max_pixels(pixels.shape[1], pixels.shape[0], max_pixels)
    return Image(pixels=pixels, source_format=fmt)


def read_image(path: str | Path, max_pixels: int = 0) -> np.ndarray:
    """Read an image file exactly as the server decodes its bytes: `decode_image(...).pixels`.

    The one decoder for training and serving: HxWx1 (grey) or HxWx3 (RGB order), uint8 or
    uint16 kept as stored, DICOM float32 on 0..255. Meant for images only: label masks (GIF,
    palette PNG) are labels, not images, and are read with PIL by the dataset readers
    (the server refuses GIF, and OpenCV expands palette PNGs to colour).
    """
    return decode_image(Path(path).read_bytes(), max_pixels=max_pixels).pixels


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels as uint8 on the server's 0..255 scale (for readers that need uint8).

    uint8 is returned as is; uint16 is divided by 257 (as `vision.preprocess` does) and float32
    (DICOM, raw) taken on 0..255; both rounded and clipped.
    """
    if pixels.dtype == np.uint8:
        return pixels
    scale = np.float32(1.0 / 257.0) if pixels.dtype == np.uint16 else np.float32(1.0)
    return np.clip(np.rint(pixels.astype(np.float32) * scale), 0, 255).astype(np.uint8)


def _check_raw_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in shape)
    valid = len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3))
    if not valid or any(d <= 0 for d in shape):
        raise InvalidInputError(
            f"raw shape {list(shape)} is not valid; expected [H, W], [H, W, 1] or [H, W, 3] "
            "with positive sizes"
        )
    return shape[0], shape[1], shape[2] if len(shape) == 3 else 1


def image_from_raw(data: bytes, shape: tuple[int, ...], dtype: str, max_pixels: int = 0) -> Image:
    """Wrap raw little-endian pixels (HxW, HxWx1, HxWx3 RGB; uint8, uint16, float32).

    float32 pixels are taken to be on a 0..255 scale, like uint8.
    """
    if dtype not in _RAW_DTYPES:
        raise InvalidInputError(f"raw dtype {dtype!r} is not supported; use one of {_RAW_DTYPES}")
    height, width, channels = _check_raw_shape(shape)
    check_max_pixels(width, height, max_pixels)
    np_dtype = np.dtype(dtype).newbyteorder("<")
    expected = height * width * channels * np_dtype.itemsize
    if len(data) != expected:
        raise InvalidInputError(
            f"raw pixels: {len(data)} bytes given, but shape {list(shape)} of {dtype} needs "
            f"{expected} bytes"
        )
    pixels = np.frombuffer(data, dtype=np_dtype).astype(dtype).reshape(height, width, channels)
    if pixels.dtype == np.float32 and not np.isfinite(pixels).all():
        raise InvalidInputError("raw float32 pixels contain NaN or infinity")
    return Image(pixels=pixels, source_format="raw")
