"""Image input: encoded files (PNG, JPEG, TIFF, BMP, DICOM) and raw pixel buffers.

Module order (no import circle): `limits`, `sniff`, `dicom_header` at the bottom; `dicom`
uses them; `image` uses `dicom` and them.
"""

from vision.io.dicom import decode_dataset, decode_dicom, decode_frames
from vision.io.dicom_header import DicomHeader, DicomReference, PatientStudy, read_header
from vision.io.image import decode_image, image_from_raw, read_image, to_uint8
from vision.io.limits import check_max_pixels
from vision.io.sniff import SUPPORTED_FORMATS, sniff_format

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
