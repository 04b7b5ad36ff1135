"""Build small DICOM files in memory for the decoding tests."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def make_dataset(
    array: np.ndarray, photometric: str = "MONOCHROME2", **elements: object
) -> Dataset:
    """A dataset with file meta holding `array` uncompressed, plus extra elements."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = array.shape[:2] if photometric == "RGB" else array.shape[-2:]
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = array.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if array.dtype.kind == "i" else 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = array.tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """`ds` as a Part 10 file (preamble + DICM)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_dicom(array: np.ndarray, photometric: str = "MONOCHROME2", **elements: object) -> bytes:
    """A Part 10 file (preamble + DICM) holding `array` uncompressed, plus extra elements."""
    return to_bytes(make_dataset(array, photometric, **elements))
