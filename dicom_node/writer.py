"""Result objects as DICOM files in Explicit VR Little Endian: pydicom's bytes, written faster.

`pydicom.dcmwrite(..., enforce_file_format=True)` spends most of its time around the values, not
in them: per element a buffer, the character sets converted again, the VR checks; per data set
the sorted keys and the ambiguous-VR walk of the whole subtree; per sequence item a seek back to
patch its length. A SEG, SR and GSPS of one photograph hold about 800 elements in 150 data sets:
15 ms of pydicom's writing here, on the path between the last prediction and the archive.

`file_bytes(ds)` writes the same bytes with less around them. The preamble and File Meta
Information are pydicom's own (`dcmwrite` of the meta with the data set's SOP Class and Instance
UIDs, so its checks and fill-ins apply). Each element's value is encoded by pydicom's own
writer for its VR, except the common plain cases done here the way that writer does them:
ASCII strings of the string VRs (padded to even length, with NUL for UI and a space otherwise)
and Python ints and floats of the binary number VRs. Raw elements are copied when their data set
says it was read in this encoding and character set, as pydicom does, and decoded otherwise.
Pixel Data of VR "OB or OW" gets pydicom's own correction. Anything else pydicom would treat
specially (a transfer syntax other than Explicit VR Little Endian, another ambiguous VR, an
undefined length, a buffered value, a value too long for its VR's
16-bit length field, file meta elements in the data set) makes `file_bytes` fall back to
`dcmwrite` for the whole object. `tests/dicom_node/test_writer.py` compares the bytes with
pydicom's for every kind of result the node builds.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, dcmwrite, writers
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import CUSTOMIZABLE_CHARSET_VR, EXPLICIT_VR_LENGTH_32

__all__ = ["UnsupportedError", "body_bytes", "file_bytes"]

_ENCODING = (False, True)  # (implicit VR, little endian) of every file written here
_ITEM = b"\xfe\xff\x00\xe0"
_PIXEL_DATA = 0x7FE00010
_STRINGS = frozenset(
    ("AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR", "LO", "LT", "SH", "ST", "UC", "UT")
)
_NUMBERS = {"US": "H", "UL": "L", "SS": "h", "SL": "l", "FL": "f", "FD": "d"}
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_CHARSET_VRS = frozenset(str(vr) for vr in CUSTOMIZABLE_CHARSET_VR)


class UnsupportedError(ValueError):
    """The data set needs something of pydicom's writer not done here (`file_bytes` falls back)."""


def file_bytes(ds: Dataset) -> bytes:
    """`ds` as `dcmwrite(file, ds, enforce_file_format=True)` writes it (the module docstring)."""
    try:
        meta = getattr(ds, "file_meta", None)
        if meta is None or meta.get("TransferSyntaxUID") != ExplicitVRLittleEndian:
            raise UnsupportedError("not Explicit VR Little Endian")
        if any(tag >> 16 in (0, 2) for tag in ds._dict):
            raise UnsupportedError("command or file meta elements in the data set")
        body = body_bytes(ds)
    except UnsupportedError:
        out = io.BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        return out.getvalue()
    return _header(ds) + body


def _header(ds: Dataset) -> bytes:
    """The preamble, "DICM" and the File Meta Information pydicom writes for `ds`."""
    stub = Dataset()
    stub.file_meta = ds.file_meta
    stub.preamble = getattr(ds, "preamble", None)
    for keyword in ("SOPClassUID", "SOPInstanceUID"):  # dcmwrite's source for the meta's UIDs
        if keyword in ds:
            stub[keyword] = ds[keyword]
    out = io.BytesIO()
    dcmwrite(out, stub, enforce_file_format=True)
    written = out.getvalue()
    # (0002,0000) File Meta Information Group Length: its UL value follows tag, VR, length
    (group_length,) = struct.unpack_from("<I", written, 132 + 8)
    return written[: 132 + 12 + group_length]


def body_bytes(ds: Dataset, parent: Sequence[str] | None = None) -> bytes:
    """The data set `ds`'s elements as pydicom's `write_dataset` writes them into an Explicit VR
    Little Endian file (`parent`: the encodings of the data set holding it); raises
    `UnsupportedError` where pydicom would do something not done here."""
    convert = ds.original_encoding != _ENCODING or ds.original_character_set != ds._character_set
    charset = ds.get("SpecificCharacterSet", parent) or [default_encoding]
    encodings = _encodings(charset)
    parts = []
    for tag in sorted(ds._dict):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:  # retired group lengths are not written
            continue
        element = ds._dict[tag]
        if isinstance(element, RawDataElement):
            if not convert:
                parts.append(_raw(element))
                continue
            element = ds[tag]  # decoded, as pydicom does before writing it again
        if convert and tag == _PIXEL_DATA and element.VR == "OB or OW":
            # pydicom's correction, which for Pixel Data reads this data set only
            correct_ambiguous_vr_element(element, ds, True, [ds])
        parts.append(_element(element, encodings))
    return b"".join(parts)


def _encodings(charset: str | Sequence[str]) -> list[str]:
    return convert_encodings(list(charset) if not isinstance(charset, str) else charset)


def _raw(element: RawDataElement) -> bytes:
    vr = element.VR
    if vr is None or len(vr) != 2 or element.length == 0xFFFFFFFF:
        raise UnsupportedError("a raw element without VR or of undefined length")
    return _framed(int(element.tag), vr, bytes(element.value or b""))


def _element(element: DataElement, encodings: list[str]) -> bytes:
    vr = element.VR
    if vr is None or len(vr) != 2:
        raise UnsupportedError("an ambiguous VR")
    if element.is_undefined_length or element.is_buffered:
        raise UnsupportedError("an undefined length or a buffered value")
    if vr == "SQ":
        items = element.value or ()
        value = b"".join(_item(item, encodings) for item in items)
    else:
        value = _value(element, vr, encodings)
    return _framed(int(element.tag), vr, value)


def _item(item: Dataset, encodings: list[str]) -> bytes:
    if getattr(item, "is_undefined_length_sequence_item", False):
        raise UnsupportedError("a sequence item of undefined length")
    body = body_bytes(item, encodings)
    return _ITEM + struct.pack("<I", len(body)) + body


def _framed(tag: int, vr: str, value: bytes) -> bytes:
    """Tag, VR, length and `value`."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG:
        return head + struct.pack("<HI", 0, len(value)) + value
    if len(value) > 0xFFFF:  # pydicom writes it as UN
        raise UnsupportedError("a value too long for its VR")
    return head + struct.pack("<H", len(value)) + value


def _value(element: DataElement, vr: str, encodings: list[str]) -> bytes:
    """The encoded value of a non-sequence element (empty for an empty one, as pydicom)."""
    value = element.value
    kind = type(value)
    if vr in _STRINGS and (kind is str or kind is UID):
        if not value.isascii():
            return _pydicom_value(element, vr, encodings)
        data = value.encode("ascii")
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        return data
    number = _NUMBERS.get(vr)
    if number is not None:
        kinds = (int,) if number in "HLhl" else (int, float)  # what struct packs as pydicom does
        if kind in kinds:
            return struct.pack("<" + number, value)
        if kind is MultiValue and all(type(v) in kinds for v in value):
            return struct.pack(f"<{len(value)}{number}", *value)
    return _pydicom_value(element, vr, encodings)


def _pydicom_value(element: DataElement, vr: str, encodings: list[str]) -> bytes:
    """The value as pydicom's writer for `vr` encodes it (`write_data_element`'s call)."""
    if element.is_empty:
        return b""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write, parameter = writers[vr]  # type: ignore[index]
    if vr in _CHARSET_VRS:
        write(buffer, element, encodings=encodings)
    elif parameter is not None:
        write(buffer, element, parameter)
    else:
        write(buffer, element)
    return buffer.getvalue()
