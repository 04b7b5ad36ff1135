"""Image input: encoded files (PNG, JPEG, TIFF, BMP, DICOM) and raw pixel buffers.

Module order (no import circle): `limits`, `sniff`, `dicom_header` at the bottom; `dicom`
uses them; `image` uses `dicom` (on the first DICOM file only) and them.

The DICOM names are loaded on first use (PEP 562 `__getattr__`): importing `vision.io` for
PNG/JPEG decoding does not import pydicom and its codecs (about 0.4 CPU-s and 40 MiB), so a
server reaches SERVING without them; the first DICOM decode pays that import once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vision.io.image import decode_image, image_from_raw, read_image, to_uint8
from vision.io.limits import check_max_pixels
from vision.io.sniff import SUPPORTED_FORMATS, sniff_format

if TYPE_CHECKING:
    from vision.io.dicom import decode_dataset, decode_dicom, decode_frames
    from vision.io.dicom_header import DicomHeader, DicomReference, PatientStudy, read_header

# name -> the submodule that defines it, imported when the name is first asked for
_LAZY = {
    "decode_dataset": "dicom",
    "decode_dicom": "dicom",
    "decode_frames": "dicom",
    "DicomHeader": "dicom_header",
    "DicomReference": "dicom_header",
    "PatientStudy": "dicom_header",
    "read_header": "dicom_header",
}

__all__ = [
    "SUPPORTED_FORMATS",
    "DicomHeader",
    "DicomReference",
    "PatientStudy",
    "check_max_pixels",
    "decode_dataset",
    "decode_dicom",
    "decode_frames",
    "decode_image",
    "image_from_raw",
    "read_header",
    "read_image",
    "sniff_format",
    "to_uint8",
]


def __getattr__(name: str) -> Any:
    """A DICOM name of `__all__`, imported from its submodule on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Every public name, the lazy DICOM ones included."""
    return sorted({*globals(), *__all__})
