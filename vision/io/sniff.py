"""Format sniffing by magic bytes (bottom module: imports no decoder)."""

from __future__ import annotations

from vision.errors import UnsupportedFormatError

SUPPORTED_FORMATS = ("png", "jpeg", "tiff", "bmp", "dicom")
SUPPORTED_TEXT = "PNG, JPEG, TIFF (8/16-bit), BMP, DICOM (Part 10 file with the DICM prefix)"
_KNOWN_UNSUPPORTED = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
    b"\xffO\xffQ": "JPEG 2000 codestream",
    b"%PDF": "PDF",
}


def sniff_format(data: bytes) -> str | None:
    """The format name out of SUPPORTED_FORMATS that the magic bytes announce, else None."""
    head = bytes(data[:8])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(data) >= 132 and bytes(data[128:132]) == b"DICM":
        return "dicom"
    if head.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    return None


def unsupported_error(data: bytes) -> UnsupportedFormatError:
    """The error for data that `sniff_format` did not recognise, naming what it looks like."""
    head = bytes(data[:16])
    name = next((v for k, v in _KNOWN_UNSUPPORTED.items() if head.startswith(k)), None)
    if name is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        name = "WebP"
    what = f"{name} images are not supported" if name else f"unrecognised image format {head[:8]!r}"
    return UnsupportedFormatError(f"{what}; supported formats: {SUPPORTED_TEXT}")
