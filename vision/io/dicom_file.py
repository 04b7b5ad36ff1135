"""DICOM Part 10 bytes into a pydicom Dataset, bounded and without pydicom's text in errors.

A Deflated Explicit VR Little Endian data set is inflated here, by `zlib.decompressobj` with a
`max_length`, and refused once it would pass the byte limit: pydicom itself inflates the whole
stream before anything can be checked (3 MB can announce 3 GiB). Errors say what to fix; the
text of pydicom's exceptions, which can quote element values, is never part of them.
"""

from __future__ import annotations

import io
import struct
import zlib

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from vision.errors import ImageTooLargeError, InvalidInputError, UnsupportedFormatError
from vision.io.limits import DICOM_HEADER_BYTES, max_decoded_bytes

_PREFIX = 132  # 128-byte preamble + "DICM"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_CHUNK = 1 << 20


def _file_meta(data: bytes) -> tuple[int, str | None]:
    """(offset after the file meta group, its TransferSyntaxUID) from the explicit-VR bytes."""
    offset, syntax = _PREFIX, None
    while offset + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        if group != 2:
            break
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", data, offset + 6)
            start = offset + 8
        if element == 0x0010:
            syntax = data[start : start + length].rstrip(b"\x00 ").decode("latin-1")
        offset = start + length
    return offset, syntax


def inflate(deflated: bytes, limit: int) -> bytes:
    """The raw-deflate stream inflated; ImageTooLargeError as soon as it passes `limit` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    parts, size, pending = [], 0, deflated
    try:
        while pending and not inflater.eof:
            chunk = inflater.decompress(pending, _CHUNK)
            pending = inflater.unconsumed_tail
            size += len(chunk)
            if limit and size > limit:
                raise ImageTooLargeError(
                    f"the deflated DICOM data set inflates to more than {limit} bytes, the byte "
                    "limit that --max-image-pixels sets: send a smaller image"
                )
            parts.append(chunk)
            if not chunk and not pending:
                break
    except zlib.error:
        raise InvalidInputError(
            "the deflated DICOM data set is not a valid deflate stream; send the complete file"
        ) from None
    return b"".join(parts)


def _encoding(syntax: str | None) -> tuple[bool, bool]:
    """(implicit VR, little endian) of a transfer syntax; refused when it is no known one."""
    if syntax is None:
        raise InvalidInputError(
            "DICOM file meta has no readable TransferSyntaxUID; send a Part 10 file with its "
            "file meta information"
        )
    if syntax not in AllTransferSyntaxes:
        raise UnsupportedFormatError(
            "DICOM TransferSyntaxUID is not a transfer syntax this server knows; send "
            "uncompressed, deflated, RLE, JPEG, JPEG-LS or JPEG 2000 data"
        )
    return syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian


def _parse(data: bytes, meta_end: int, syntax: str | None, max_pixels: int) -> Dataset:
    implicit, little = _encoding(syntax)
    body: bytes | memoryview = memoryview(data)[meta_end:]
    if syntax == DeflatedExplicitVRLittleEndian:
        limit = max_decoded_bytes(max_pixels)
        body = inflate(bytes(body), limit + DICOM_HEADER_BYTES if limit else 0)
    meta = read_dataset(io.BytesIO(data[_PREFIX:meta_end]), False, True)
    ds = read_dataset(io.BytesIO(body), implicit, little)
    ds.file_meta = FileMetaDataset(meta)
    ds.set_original_encoding(implicit, little)
    return ds


def read_part10(data: bytes, max_pixels: int = 0) -> Dataset:
    """The data set of a Part 10 file (preamble + DICM); InvalidInputError when unreadable.

    The file meta is walked here and the data set parsed with pydicom's `read_dataset`
    (elements left raw): nothing is converted, so pydicom's validation never warns with a
    value; the decoder reads what it needs with `dicom_elements`.
    """
    try:
        meta_end, syntax = _file_meta(data)
    except struct.error:
        meta_end, syntax = 0, None
    try:
        return _parse(data, meta_end, syntax, max_pixels)
    except (ImageTooLargeError, InvalidInputError):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types; its text may quote values
        raise InvalidInputError(
            f"DICOM header could not be read ({type(exc).__name__}); the file is truncated or "
            "corrupt, send the complete file"
        ) from None
