"""DICOM Part 10 files written element by element, malformed on purpose where asked.

pydicom validates what it writes; these tests need what no careful writer makes: a Rows with
an unknown VR or two values, a NumberOfFrames of "abc", a RescaleSlope of VR LO, a transfer
syntax that is no syntax, a deflated data set that inflates to gigabytes. Explicit VR little
endian throughout (the data set itself deflated when the syntax says so).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# A marker that must never appear in a reply, a log line or a warning.
PHI = "PHI12345"

_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_PAD_NULL = {"UI", "OB", "UN"}

Tag = tuple[int, int]
Element = tuple[str, bytes | str | int | list[int]]


def us(*values: int) -> bytes:
    """Unsigned shorts, little endian."""
    return struct.pack(f"<{len(values)}H", *values)


def element(tag: Tag, vr: str, value: bytes | str) -> bytes:
    """One explicit-VR little-endian element (value padded to even length)."""
    raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if len(raw) % 2:
        raw += b"\x00" if vr in _PAD_NULL else b" "
    group, number = tag
    code = vr.encode("latin-1")[:2].ljust(2, b"?")
    if vr in _LONG:
        return struct.pack("<HH2sHI", group, number, code, 0, len(raw)) + raw
    return struct.pack("<HH2sH", group, number, code, len(raw) & 0xFFFF) + raw


def encapsulated(frames: list[bytes]) -> bytes:
    """Pixel data items: an empty basic offset table, one fragment per frame, the delimiter."""
    items = [struct.pack("<HHI", 0xFFFE, 0xE000, 0)]
    for frame in frames:
        frame = frame + (b"\x00" if len(frame) % 2 else b"")
        items.append(struct.pack("<HHI", 0xFFFE, 0xE000, len(frame)) + frame)
    items.append(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return b"".join(items)


def _pixel_element(value: bytes, syntax: str) -> bytes:
    if syntax in (EXPLICIT_LE, DEFLATED) or not value.startswith(b"\xfe\xff\x00\xe0"):
        return element((0x7FE0, 0x0010), "OB", value)
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + value


def part10(elements: Mapping[Tag, Element], syntax: str = EXPLICIT_LE) -> bytes:
    """A Part 10 file: preamble, DICM, file meta, then `elements` (sorted by tag).

    The element (0x7FE0, 0x0010) given as ("OB", bytes) is written with an undefined length
    when the bytes are encapsulated items.
    """
    meta = b"".join(
        [
            element((0x0002, 0x0001), "OB", b"\x00\x01"),
            element((0x0002, 0x0002), "UI", SECONDARY_CAPTURE),
            element((0x0002, 0x0003), "UI", "1.2.826.0.1.3680043.8.498.1"),
            element((0x0002, 0x0010), "UI", syntax),
        ]
    )
    meta = element((0x0002, 0x0000), "UL", struct.pack("<I", len(meta))) + meta
    body = []
    for tag in sorted(elements):
        vr, value = elements[tag]
        if tag == (0x7FE0, 0x0010) and isinstance(value, bytes):
            body.append(_pixel_element(value, syntax))
            continue
        if isinstance(value, int):
            value = us(value)
        elif isinstance(value, list):
            value = us(*value)
        body.append(element(tag, vr, value))
    data = b"".join(body)
    if syntax == DEFLATED:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
    return b"\x00" * 128 + b"DICM" + meta + data


def grey_elements(rows: int = 4, columns: int = 4, pixels: bytes | None = None) -> dict:
    """A valid 8-bit MONOCHROME2 image's elements (with a patient name marker)."""
    return {
        (0x0008, 0x0016): ("UI", SECONDARY_CAPTURE),
        (0x0008, 0x0018): ("UI", "1.2.826.0.1.3680043.8.498.1"),
        (0x0008, 0x0060): ("CS", "OT"),
        (0x0010, 0x0010): ("PN", f"{PHI}^Name"),
        (0x0010, 0x0020): ("LO", PHI),
        (0x0028, 0x0002): ("US", 1),
        (0x0028, 0x0004): ("CS", "MONOCHROME2"),
        (0x0028, 0x0010): ("US", rows),
        (0x0028, 0x0011): ("US", columns),
        (0x0028, 0x0100): ("US", 8),
        (0x0028, 0x0101): ("US", 8),
        (0x0028, 0x0102): ("US", 7),
        (0x0028, 0x0103): ("US", 0),
        (0x7FE0, 0x0010): ("OB", pixels if pixels is not None else bytes(rows * columns)),
    }


def grey_dicom(pixels: bytes, rows: int, columns: int, **overrides: Element) -> bytes:
    """`grey_elements` with keyword overrides ("Rows": ("US", 3)), as a Part 10 file."""
    from pydicom.datadict import tag_for_keyword

    elements = grey_elements(rows, columns, pixels)
    for keyword, value in overrides.items():
        tag = tag_for_keyword(keyword)
        elements[(tag >> 16, tag & 0xFFFF)] = value
    return part10(elements)
