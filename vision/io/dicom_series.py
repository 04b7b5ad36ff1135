"""A series' Part-10 instances read as a volume needs them: the header parsed, the pixel data
left where it lies in the instance's bytes.

`read_instance` is what `pydicom.dcmread` gives for the instances a volume is mostly made of
(uncompressed little-endian data sets whose PixelData is the last element, of a defined
length): the file meta and the data set's elements up to PixelData are parsed by pydicom's
`read_dataset` (elements left raw, as `dcmread` leaves them), and PixelData becomes a raw
element whose value is a `memoryview` of the instance's bytes at its offset, so the 512 KiB of
a CT slice are neither read through a file object nor copied before the volume takes them.
Anything else (deflated, big-endian or compressed syntaxes, float pixel data, no preamble,
elements after PixelData, a length that does not match the file) is read by `dcmread` itself,
as before, so every refusal of the series reader stays as it was.
"""

from __future__ import annotations

import io
import struct

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from vision.io.dicom_file import _PREFIX, _file_meta

PIXEL_DATA = 0x7FE00010
_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_PIXEL_VRS = (b"OB", b"OW")
_FAST_SYNTAXES = {ExplicitVRLittleEndian: False, ImplicitVRLittleEndian: True}  # -> implicit


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    """pydicom's `stop_before_pixels` condition: PixelData or float pixel data."""
    return tag in (0x7FE00010, 0x7FE00009, 0x7FE00008)


def _pixel_element(data: bytes, offset: int, implicit: bool) -> RawDataElement | None:
    """The PixelData element at `offset`, its value a view of `data`, when it is of a defined
    length and ends the file exactly; None otherwise (the caller reads the file in full)."""
    if data[offset : offset + 4] != _TAG:
        return None
    if implicit:
        vr, (length,), start = None, struct.unpack_from("<I", data, offset + 4), offset + 8
    else:
        vr = data[offset + 4 : offset + 6]
        if vr not in _PIXEL_VRS or data[offset + 6 : offset + 8] != b"\x00\x00":
            return None
        (length,), start = struct.unpack_from("<I", data, offset + 8), offset + 12
    if length == 0xFFFFFFFF or start + length != len(data):
        return None
    value = memoryview(data)[start:]
    name = None if vr is None else vr.decode("ascii")
    return RawDataElement(BaseTag(PIXEL_DATA), name, length, value, start, implicit, True)


def _fast(data: bytes) -> Dataset | None:
    """The data set with PixelData as a view, or None where `dcmread` must read the file."""
    if len(data) < _PREFIX or data[_PREFIX - 4 : _PREFIX] != b"DICM":
        return None
    meta_end, syntax = _file_meta(data)
    implicit = _FAST_SYNTAXES.get(syntax)  # type: ignore[call-overload]
    if implicit is None:
        return None
    fp = io.BytesIO(data)  # shares the bytes object's buffer: no copy
    fp.seek(meta_end)
    ds = read_dataset(fp, implicit, True, stop_when=_at_pixels)
    element = _pixel_element(data, fp.tell(), implicit)
    if element is None:
        return None
    meta = read_dataset(io.BytesIO(data[_PREFIX:meta_end]), False, True)
    ds[PIXEL_DATA] = element
    ds.file_meta = FileMetaDataset(meta)
    ds.set_original_encoding(implicit, True)
    return ds


def read_instance(data: bytes) -> Dataset:
    """One instance of a series as a pydicom data set (see the module docstring); raises what
    `pydicom.dcmread` raises for a file it cannot read."""
    data = bytes(data)  # no copy for bytes; a view is what the pixel element holds
    try:
        ds = _fast(data)
    except Exception:  # noqa: BLE001 - a malformed header: dcmread says what it says of it
        ds = None
    return ds if ds is not None else dcmread(io.BytesIO(data))
