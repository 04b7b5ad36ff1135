"""The shared datasets' images as realistic DICOM objects, for the DICOM-node tests and bench.

- DRIVE fundus TIFF -> Ophthalmic Photography 8 Bit Image Storage (RGB, modality OP, one frame or
  many), with a Pixel Spacing estimated for a 45° field of view (about 12.4 mm across 540 pixels).
- BCCD smear JPEG -> VL Microscopic Image Storage (RGB, modality GM).
- Without the datasets: synthetic fundus-like and smear-like RGB images, so round trips still run.

Every object carries a fake patient (`PATIENT_NAME`, `PATIENT_ID`, `ACCESSION`): the privacy test
greps everything the node wrote for them. No Frame of Reference: neither IOD has one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms
from pydicom import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT.parent / "shared" / "datasets"
DRIVE_IMAGES = DATASETS / "drive" / "DRIVE" / "test" / "images"
BCCD_IMAGES = DATASETS / "bccd" / "BCCD" / "JPEGImages"

OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit Image Storage
VL_MICROSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.2"  # VL Microscopic Image Storage

PATIENT_NAME = "Testpatient^Privacy"
PATIENT_ID = "PHI-123456"
ACCESSION = "ACC-PHI-778899"
# What the privacy test looks for in whatever the node wrote (a name may be logged reformatted).
PHI_STRINGS = (PATIENT_NAME, "Testpatient", PATIENT_ID, ACCESSION, "19461203")
FUNDUS_PIXEL_SPACING_MM = 0.023


@dataclass(frozen=True)
class Study:
    """Patient and study attributes shared by every object of one study."""

    study_uid: str = field(default_factory=generate_uid)
    patient_name: str = PATIENT_NAME
    patient_id: str = PATIENT_ID
    accession: str = ACCESSION
    study_id: str = "S1"
    date: str = field(default_factory=lambda: dt.date.today().strftime("%Y%m%d"))


def dataset_missing(name: str) -> str:
    """Why the `drive` or `bccd` images cannot be used here ('' when they can)."""
    folder = {"drive": DRIVE_IMAGES, "bccd": BCCD_IMAGES}[name]
    if not folder.is_dir() or not any(folder.iterdir()):
        return f"shared dataset {name!r} absent ({folder}): see /work/shared/datasets/README.md"
    return ""


def drive_images() -> list[Path]:
    return sorted(DRIVE_IMAGES.glob("*.tif")) if not dataset_missing("drive") else []


def bccd_images() -> list[Path]:
    return sorted(BCCD_IMAGES.glob("*.jpg")) if not dataset_missing("bccd") else []


def load_rgb(path: Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB (DRIVE's LZW TIFFs, BCCD's JPEGs)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def synthetic_fundus(seed: int = 0, height: int = 584, width: int = 565) -> np.ndarray:
    """A fundus-like RGB image: orange disc on black, a bright optic disc, dark vessel lines."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx, radius = height / 2, width / 2, min(height, width) * 0.46
    r = np.hypot(yy - cy, xx - cx) / radius
    inside = r < 1.0
    shade = np.clip(1.0 - 0.5 * r**2, 0, 1) * inside
    img = np.stack([200 * shade, 90 * shade, 30 * shade], axis=-1)
    dy, dx = cy + rng.uniform(-30, 30), cx + radius * 0.5
    disc = np.hypot(yy - dy, xx - dx) < 35
    img[disc] = (250, 220, 150)
    for _ in range(10):
        angle = rng.uniform(0, 2 * np.pi)
        wobble = rng.uniform(-0.3, 0.3)
        t = np.linspace(0, radius * 1.2, 400)
        ys = (dy + t * np.sin(angle + wobble * t / radius)).astype(int)
        xs = (dx + t * np.cos(angle + wobble * t / radius)).astype(int)
        ok = (ys >= 1) & (ys < height - 1) & (xs >= 1) & (xs < width - 1)
        for oy in (-1, 0, 1):
            img[ys[ok] + oy, xs[ok]] *= 0.45
    img += rng.normal(0, 3, img.shape) * inside[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_smear(seed: int = 0, height: int = 480, width: int = 640) -> np.ndarray:
    """A smear-like RGB image: pale background, red cells, one purple white cell."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), (235, 215, 205), dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(30):
        cy, cx, rad = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(25, 40)
        cell = np.hypot(yy - cy, xx - cx) < rad
        img[cell] = (210, 120, 120)
    cy, cx = rng.uniform(100, height - 100), rng.uniform(100, width - 100)
    img[np.hypot(yy - cy, xx - cx) < 45] = (120, 60, 160)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def fundus_pixels(index: int = 0, synthetic: bool = False) -> np.ndarray:
    """DRIVE test image `index` (wrapping around), or a synthetic one without the dataset."""
    images = [] if synthetic else drive_images()
    return load_rgb(images[index % len(images)]) if images else synthetic_fundus(index)


def smear_pixels(index: int = 0, synthetic: bool = False) -> np.ndarray:
    """BCCD image `index` (wrapping around), or a synthetic one without the dataset."""
    images = [] if synthetic else bccd_images()
    return load_rgb(images[index % len(images)]) if images else synthetic_smear(index)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _base(sop_class: str, study: Study, series_uid: str, number: int, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    now = dt.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientBirthDate, ds.PatientSex = "19461203", "O"
    ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = (
        study.study_uid,
        study.study_id,
        study.accession,
    )
    ds.StudyDate, ds.StudyTime = study.date, "101500"
    ds.ReferringPhysicianName = "Referring^Doctor"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 1, modality
    ds.InstanceNumber = number
    ds.ContentDate, ds.ContentTime = study.date, now.strftime("%H%M%S")
    ds.AcquisitionDateTime = study.date + now.strftime("%H%M%S")
    ds.Manufacturer, ds.ManufacturerModelName = "vision-tests", "wrap.py"
    ds.InstitutionName = "Test Hospital"
    return ds


def _srgb_profile() -> bytes:
    """An sRGB ICC profile of an input device ("scnr"), as cameras and microscopes record one.

    Colour presentation states copy it (highdicom wants class "scnr" or "spac"; Pillow's sRGB is
    a monitor profile, "mntr"). The profile ID (bytes 84-99, an MD5) is zeroed: "not computed".
    """
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[12:16] = b"scnr"
    data[84:100] = bytes(16)
    return bytes(data)


def _pixels(ds: Dataset, frames: list[np.ndarray]) -> None:
    first = frames[0]
    assert all(f.shape == first.shape and f.dtype == np.uint8 for f in frames), "same-size RGB"
    ds.Rows, ds.Columns = int(first.shape[0]), int(first.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "00"
    ds.ICCProfile, ds.ColorSpace = _srgb_profile(), "SRGB"
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = np.ascontiguousarray(np.stack(frames)).tobytes()


def ophthalmic_photo(
    frames: list[np.ndarray],
    study: Study,
    series_uid: str | None = None,
    number: int = 1,
    laterality: str = "R",
    pixel_spacing_mm: float | None = FUNDUS_PIXEL_SPACING_MM,
) -> Dataset:
    """An Ophthalmic Photography 8 Bit Image (modality OP) of one or more RGB frames."""
    ds = _base(OP_8BIT, study, series_uid or generate_uid(), number, "OP")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.NumberOfFrames = len(frames)
    ds.FrameIncrementPointer = 0x00181063 if len(frames) > 1 else 0x00000000
    if len(frames) > 1:
        ds.FrameTime = 100.0
    _pixels(ds, frames)
    ds.ImageLaterality = ds.Laterality = laterality
    ds.AnatomicRegionSequence = Sequence([_code("5665001", "SCT", "Retina")])
    ds.AcquisitionContextSequence = Sequence()
    ds.AcquisitionDeviceTypeCodeSequence = Sequence([_code("409899009", "SCT", "Fundus camera")])
    ds.IlluminationTypeCodeSequence = Sequence()
    ds.LightPathFilterTypeStackCodeSequence = Sequence()
    ds.ImagePathFilterTypeStackCodeSequence = Sequence()
    ds.LensesCodeSequence = Sequence()
    ds.PatientEyeMovementCommanded = "NO"
    ds.HorizontalFieldOfView = 45
    ds.DetectorType = "CCD"
    ds.EmmetropicMagnification = 1.0
    ds.IntraOcularPressure = None
    ds.PupilDilated = "YES"
    if pixel_spacing_mm:
        ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    return ds


def vl_microscopic(
    pixels: np.ndarray, study: Study, series_uid: str | None = None, number: int = 1
) -> Dataset:
    """A VL Microscopic Image (modality GM): one RGB blood-smear field."""
    ds = _base(VL_MICROSCOPIC, study, series_uid or generate_uid(), number, "GM")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    _pixels(ds, [pixels])
    ds.AcquisitionContextSequence = Sequence()
    ds.AnatomicRegionSequence = Sequence([_code("87612001", "SCT", "Blood")])
    ds.SpecimenDescriptionSequence = Sequence()
    ds.SeriesDescription = "Peripheral blood smear"
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def fundus_study(
    folder: Path, count: int = 1, study: Study | None = None, synthetic: bool = False
) -> list[Path]:
    """`count` single-frame fundus photographs, one series of one study, written to `folder`."""
    study = study or Study()
    series = generate_uid()
    return [
        save(
            ophthalmic_photo([fundus_pixels(i, synthetic)], study, series, i + 1),
            folder / f"op-{i + 1:03d}.dcm",
        )
        for i in range(count)
    ]


def fundus_multiframe(
    folder: Path, frames: int = 100, study: Study | None = None, synthetic: bool = False
) -> Path:
    """One Ophthalmic Photography instance of `frames` fundus frames (the bench's series)."""
    study = study or Study()
    pixels = [fundus_pixels(i, synthetic) for i in range(frames)]
    return save(ophthalmic_photo(pixels, study), folder / f"op-{frames}-frames.dcm")


def smear_series(
    folder: Path, count: int = 1, study: Study | None = None, synthetic: bool = False
) -> list[Path]:
    """`count` VL Microscopic images of blood-smear fields, one series, written to `folder`."""
    study = study or Study()
    series = generate_uid()
    return [
        save(
            vl_microscopic(smear_pixels(i, synthetic), study, series, i + 1),
            folder / f"gm-{i + 1:03d}.dcm",
        )
        for i in range(count)
    ]
