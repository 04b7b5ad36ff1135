"""Volumetric test data: ellipsoid phantoms and the MR series that carry them (pydicom)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

# An oblique orientation: columns and rows rotated about the patient's z axis and tilted.
OBLIQUE = np.array(
    [
        [np.cos(0.3), np.sin(0.3), 0.0],
        [-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)],
    ]
)


def direction_of(orientation: np.ndarray) -> np.ndarray:
    """3x3 direction rows (column axis, row axis, slice normal) of an orientation's two rows."""
    rows = np.asarray(orientation, dtype=np.float64)
    return np.stack([rows[0], rows[1], np.cross(rows[0], rows[1])])


def ellipsoid(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre_mm: tuple[float, float, float],
    radii_mm: tuple[float, float, float],
) -> np.ndarray:
    """bool [D, H, W]: voxel centres inside the axis-aligned ellipsoid (grid mm, slice-first)."""
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    (cz, cy, cx), (rz, ry, rx) = centre_mm, radii_mm
    return ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def mr_series(
    voxels: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (-20.0, 10.0, 30.0),
    orientation: np.ndarray = OBLIQUE,
    description: str = "Hippocampus phantom",
    seed: int = 7,
) -> list[Dataset]:
    """One MR Image Storage instance per slice of int16 `voxels` [D, H, W], in shuffled order.

    Slice k lies at origin + k * spacing[0] along the orientation's normal; InstanceNumber is
    shuffled too (sorting must go by position). SliceThickness differs from the spacing.
    """
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    normal = direction_of(orientation)[2]
    datasets = []
    for k in range(voxels.shape[0]):
        position = np.asarray(origin) + k * spacing[0] * normal
        datasets.append(_slice(voxels[k], spacing, position, orientation, (study, series, frame)))
        datasets[-1].SeriesDescription = description
    order = np.random.default_rng(seed).permutation(len(datasets))
    shuffled = [datasets[i] for i in order]
    for number, ds in enumerate(shuffled, start=1):
        ds.InstanceNumber = number
    return shuffled


def _slice(pixels, spacing, position, orientation, uids: tuple[str, str, str]) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "P1", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber = "", "MR", 3
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in np.ravel(orientation)]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
    ds.SliceThickness = float(spacing[0]) * 0.8
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """`ds` as a Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
