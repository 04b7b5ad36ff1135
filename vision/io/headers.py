"""Image sizes read from codestream headers, without decoding (bottom module: no decoder).

Used before any pixel is decoded: by `image` for JPEG files, and by `dicom` for the frames of
compressed DICOM pixel data, whose codestream may announce another size than Rows x Columns.
"""

from __future__ import annotations

import struct

_J2K_START = b"\xff\x4f\xff\x51"  # SOC then SIZ
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _is_sof(marker: int) -> bool:
    """A start-of-frame marker: SOF0..SOF15 but DHT, JPG, DAC; or JPEG-LS's SOF55."""
    return (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7


def jpeg_scan(data: bytes) -> tuple[tuple[int, int] | None, int]:
    """(width, height) from the first SOF marker, and the offset of the first SOS (-1: none)."""
    size, i, n = None, 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return size, -1
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            return size, i
        if _is_sof(marker) and i + 9 <= n:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            size = (width, height)
        i += 2 + length
    return size, -1


def j2k_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 codestream's SIZ marker (or a JP2 file's ihdr box)."""
    if data[:4] == _J2K_START and len(data) >= 24:
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[8:24])
        return max(0, xsiz - xosiz), max(0, ysiz - yosiz)
    if data[:12] == _JP2_SIGNATURE:
        at = data.find(b"ihdr", 12, 4096)
        if at > 0 and at + 12 <= len(data):
            height, width = struct.unpack(">II", data[at + 4 : at + 12])
            return width, height
    return None


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a JPEG, JPEG-LS or JPEG 2000 codestream announces; None if not one."""
    if data[:2] == b"\xff\xd8":
        return jpeg_scan(data)[0]
    return j2k_size(data)
