"""Image input: encoded files (PNG, JPEG, TIFF, BMP, DICOM) and raw pixel buffers."""

from vision.io.dicom import decode_dicom
from vision.io.image import (
    SUPPORTED_FORMATS,
    check_max_pixels,
    decode_image,
    image_from_raw,
    read_image,
    sniff_format,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "check_max_pixels",
    "decode_dicom",
    "decode_image",
    "image_from_raw",
    "read_image",
    "sniff_format",
]
