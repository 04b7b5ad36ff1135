"""Test images for the review page: a 16-bit CT-like DICOM (with a Frame of Reference, so a
SEG can be placed on it, and patient attributes) and PNG photographs with bright blobs."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    generate_uid,
)

STUDY_DESCRIPTION = "review browser test"


def phantom(size: int, seed: int = 0) -> np.ndarray:
    """A size x size int16 'CT' in HU: air, a body disc, a bright 'bone' disc and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.full((size, size), -1000.0, np.float32)
    image[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.16] = 40.0
    image[(x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.004] = 900.0
    image += rng.normal(0, 10, image.shape)
    return image.round().astype(np.int16)


def ct_dicom(size: int = 512, study_uid: str | None = None, seed: int = 0) -> bytes:
    """A CT Image Storage file, 16 bits stored unsigned with rescale -1024 (HU = v - 1024)."""
    hu = phantom(size, seed)
    stored = (hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "Test^Review"
    ds.PatientID = "RV-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.AccessionNumber = "A0001"
    ds.StudyID = "1"
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.SeriesDescription = "phantom"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "tests"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1.0
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = 120
    ds.PixelData = stored.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def blob_png(size: int = 640, seed: int = 1) -> bytes:
    """An RGB photograph-like PNG: dark textured background with two bright blobs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 40 + 20 * rng.random((size, size))
    base[(x - 0.3) ** 2 + (y - 0.35) ** 2 < 0.01] = 230
    base[(x - 0.7) ** 2 + (y - 0.65) ** 2 < 0.006] = 210
    rgb = np.stack([base, base * 0.9, base * 0.8], axis=-1).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def multiframe_dicom(size: int = 128, frames: int = 3) -> bytes:
    """Multi-frame Grayscale Word Secondary Capture: frame k has a bright square at row 20k."""
    sop = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    stack = np.full((frames, size, size), 100, np.uint16)
    for k in range(frames):
        stack[k, 20 * k + 10 : 20 * k + 30, 40:80] = 3000
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Test^Frames", "RV-0002", "OT"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "", "2"
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 1, 1
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, size, size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 100.0
    ds.PixelData = stack.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
