"""Synthetic MR series with known geometry: an ellipsoid, anisotropic voxels, oblique planes."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SLOPE, INTERCEPT = 0.5, -50.0
INSIDE, OUTSIDE = 900.0, 100.0  # modality values (after rescale)


@dataclass(frozen=True)
class Phantom:
    """An ellipsoid of semi-axes `axes_mm` centred in a [D, H, W] grid of `spacing` (z, y, x)."""

    shape: tuple[int, int, int] = (30, 64, 56)
    spacing: tuple[float, float, float] = (2.5, 0.9, 1.1)
    axes_mm: tuple[float, float, float] = (22.0, 18.0, 15.0)
    origin: tuple[float, float, float] = (-31.5, 12.25, 40.0)

    @property
    def direction(self) -> np.ndarray:
        """Oblique: rows are the column, row and slice axes (20° about x, then 25° about z)."""
        a, b = math.radians(20), math.radians(25)
        rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
        return (rz @ rx).T  # rows: rotated x, y, z axes

    @property
    def volume_mm3(self) -> float:
        """The analytic volume 4/3 π a b c."""
        a, b, c = self.axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c

    def values(self, supersample: int = 3) -> np.ndarray:
        """Modality values [D, H, W] with partial-volume averaging over sub-voxel samples."""
        offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
        axes = []
        for n, s in zip(self.shape, self.spacing, strict=True):
            grid = (np.arange(n)[:, None] + offsets[None, :]).ravel() * s
            axes.append(grid - (n - 1) * s / 2.0)
        z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
        a, b, c = self.axes_mm
        inside = (x / c) ** 2 + (y / b) ** 2 + (z / a) ** 2 <= 1.0
        d, h, w = self.shape
        k = supersample
        fraction = inside.reshape(d, k, h, k, w, k).mean(axis=(1, 3, 5))
        return OUTSIDE + (INSIDE - OUTSIDE) * fraction

    def stored(self) -> np.ndarray:
        """uint16 stored values: (modality - intercept) / slope, rounded."""
        return np.rint((self.values() - INTERCEPT) / SLOPE).astype(np.uint16)

    def position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice k."""
        return np.asarray(self.origin) + k * self.spacing[0] * self.direction[2]


def _base(phantom: Phantom, sop_class: str, study: str, series: str, frame: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "Phantom^Ellipsoid",
        "P1",
        "",
        "O",
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", ""
    ds.ReferringPhysicianName, ds.PositionReferenceIndicator = "", ""
    ds.Modality, ds.SeriesNumber, ds.Manufacturer = "MR", 7, "vision tests"
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "HEAD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = phantom.shape[1], phantom.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def _mr_attributes(ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
    ds.MRAcquisitionType, ds.EchoTrainLength = "2D", 1
    ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 500.0, 15.0, 1.5
    ds.ContentDate, ds.ContentTime, ds.AcquisitionNumber = "20240102", "101500", 1


def mr_series(phantom: Phantom, seed: int = 0) -> list[Dataset]:
    """One MR Image Storage instance per slice, in shuffled order with shuffled InstanceNumbers."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    stored = phantom.stored()
    iop = [float(v) for v in (*phantom.direction[0], *phantom.direction[1])]
    out = []
    order = np.random.default_rng(seed).permutation(phantom.shape[0])
    for number, k in enumerate(order):
        ds = _base(phantom, MR_STORAGE, study, series, frame)
        _mr_attributes(ds)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = int(number + 1)  # deliberately unrelated to the position
        ds.ImagePositionPatient = [round(float(v), 6) for v in phantom.position(int(k))]
        ds.ImageOrientationPatient = [round(v, 8) for v in iop]
        ds.PixelSpacing = [phantom.spacing[1], phantom.spacing[2]]
        ds.SliceThickness = phantom.spacing[0] * 0.8  # not the spacing: a gap between slices
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.PixelData = stored[k].tobytes()
        out.append(ds)
    return out


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def enhanced_mr(phantom: Phantom, seed: int = 0) -> Dataset:
    """One Enhanced MR object holding every slice as a frame, frames in shuffled order."""
    ds = _base(phantom, ENHANCED_MR_STORAGE, generate_uid(), generate_uid(), generate_uid())
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    order = np.random.default_rng(seed).permutation(phantom.shape[0])
    ds.NumberOfFrames = len(order)
    iop = [round(float(v), 8) for v in (*phantom.direction[0], *phantom.direction[1])]
    measures = _item(PixelSpacing=list(phantom.spacing[1:]), SliceThickness=phantom.spacing[0])
    shared = _item(
        PixelMeasuresSequence=[measures],
        PlaneOrientationSequence=[_item(ImageOrientationPatient=iop)],
        PixelValueTransformationSequence=[
            _item(RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT, RescaleType="US")
        ],
    )
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(
            PlanePositionSequence=[
                _item(ImagePositionPatient=[round(float(v), 6) for v in phantom.position(int(k))])
            ]
        )
        for k in order
    ]
    ds.PixelData = phantom.stored()[order].tobytes()
    return ds


def without(ds: Dataset, keyword: str) -> Dataset:
    """A deep copy of `ds` lacking `keyword`."""
    out = copy.deepcopy(ds)
    delattr(out, keyword)
    return out
