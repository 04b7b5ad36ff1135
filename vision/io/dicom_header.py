"""What a result needs to refer back to the DICOM object it came from.

`DicomHeader` holds the identifying UIDs (`DicomReference`), the Patient and General Study
module attributes (`PatientStudy`), and the image geometry. Identifying values are held, never
shown: the reprs of `DicomReference` and `PatientStudy` name no value, so a header can be logged
or put in an error message without leaking a patient identifier. UIDs count as identifying
(the PS3.15 Basic Application Level Confidentiality Profile replaces them).

Patient and study text, and every number, is read from the encoded bytes without pydicom's
value validation, whose warnings quote the offending value (and so would put a malformed birth
date into the log); a malformed attribute reads as None.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.values import TEXT_VR_DELIMS

from vision.errors import InvalidInputError
from vision.io.dicom_elements import decimals, first_item, integers

_HIDDEN = "<hidden>"


@dataclass(frozen=True, repr=False)
class DicomReference:
    """The UIDs a result (SR, SEG, GSPS) must carry to point back at its source instance."""

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    frame_of_reference_uid: str | None = None

    def __repr__(self) -> str:
        """The SOP Class (a standard UID, not identifying); the instance UIDs hidden."""
        held = [f.name for f in fields(self) if f.name != "sop_class_uid" and getattr(self, f.name)]
        return f"DicomReference(sop_class_uid={self.sop_class_uid!r}, {len(held)} UIDs {_HIDDEN})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class PatientStudy:
    """Patient and General Study module attributes, as encoded (DA/TM strings kept verbatim).

    Protected health information: held to be copied into results, never logged. The repr
    says how many attributes are present and nothing else.
    """

    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    patient_age: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    referring_physician_name: str | None = None
    study_id: str | None = None
    study_description: str | None = None

    def __repr__(self) -> str:
        """The count of present attributes only; no value."""
        held = sum(1 for f in fields(self) if getattr(self, f.name) is not None)
        return f"PatientStudy({held} attributes {_HIDDEN})"

    __str__ = __repr__


@dataclass(frozen=True)
class DicomHeader:
    """A DICOM image object's references, patient/study attributes and geometry.

    `frames` are the 1-based frame numbers the decoded pixels hold ((1,) for a single-frame
    object); `number_of_frames` is NumberOfFrames as present (None when absent). Spacing,
    position and orientation come from the top-level attributes or, in enhanced multi-frame
    objects, from the shared functional groups (per-frame values only for a single frame);
    each is None when absent or malformed.
    """

    reference: DicomReference
    patient: PatientStudy
    modality: str | None
    photometric_interpretation: str | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    bits_stored: int | None
    high_bit: int | None
    pixel_representation: int | None
    samples_per_pixel: int | None
    number_of_frames: int | None
    frames: tuple[int, ...]
    pixel_spacing_mm: tuple[float, float] | None
    imager_pixel_spacing_mm: tuple[float, float] | None
    slice_thickness_mm: float | None
    image_position_patient: tuple[float, float, float] | None
    image_orientation_patient: tuple[float, float, float, float, float, float] | None


_PATIENT_KEYWORDS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "patient_age": "PatientAge",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "referring_physician_name": "ReferringPhysicianName",
    "study_id": "StudyID",
    "study_description": "StudyDescription",
}
_UID_KEYWORDS = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "frame_of_reference_uid": "FrameOfReferenceUID",
}


def _encodings(ds: Dataset) -> list[str]:
    try:
        return convert_encodings(ds.get("SpecificCharacterSet"))
    except Exception:  # an unknown character set: fall back to the default repertoire
        return convert_encodings(None)


@lru_cache(maxsize=64)
def _keyword_tag(keyword: str) -> int:
    """The tag of `keyword` (cached: a header reads the same keywords from every file)."""
    return int(Tag(keyword))


def _raw_text(ds: Dataset, keyword: str, encodings: list[str]) -> str | None:
    """The element's text without pydicom validation; None when absent or empty."""
    tag = _keyword_tag(keyword)
    if tag not in ds:
        return None
    value = ds.get_item(tag, keep_deferred=True).value
    if value is None:
        return None
    if isinstance(value, bytes):
        text = decode_bytes(value.rstrip(b"\x00 "), encodings, TEXT_VR_DELIMS)
    elif isinstance(value, str):
        text = value
    else:  # a PersonName or a multi-value already converted
        text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
    text = text.strip("\x00 ")
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    """A single integer attribute; None when absent, empty or malformed (never raises)."""
    try:
        values = integers(ds, keyword)
    except InvalidInputError:
        return None
    return values[0] if values and len(values) == 1 else None


def _floats(ds: Dataset | None, keyword: str, count: int) -> tuple[float, ...] | None:
    """`count` numbers; None when absent, of another count or malformed (never raises)."""
    if ds is None:
        return None
    try:
        values = decimals(ds, keyword)
    except InvalidInputError:
        return None
    return tuple(values) if values is not None and len(values) == count else None


def _group_item(ds: Dataset, sequence: str, item: str) -> Dataset | None:
    """`sequence[0].item[0]`, or None (never raises)."""
    try:
        outer = first_item(ds, sequence)
        return first_item(outer, item) if outer is not None else None
    except InvalidInputError:
        return None


def _geometry(ds: Dataset, keyword: str, item: str, frames: int, count: int) -> Any:
    """A top-level attribute, else the shared (then, for one frame, the per-frame) group's."""
    value = _floats(ds, keyword, count)
    if value is None:
        value = _floats(_group_item(ds, "SharedFunctionalGroupsSequence", item), keyword, count)
    if value is None and frames == 1:
        per_frame = _group_item(ds, "PerFrameFunctionalGroupsSequence", item)
        value = _floats(per_frame, keyword, count)
    return value


def read_header(ds: Dataset) -> DicomHeader:
    """The `DicomHeader` of a dataset (never raises for absent or malformed attributes)."""
    encodings = _encodings(ds)
    number_of_frames = _int(ds, "NumberOfFrames")
    count = number_of_frames if number_of_frames and number_of_frames > 0 else 1
    reference = DicomReference(**{k: _raw_text(ds, v, encodings) for k, v in _UID_KEYWORDS.items()})
    patient = PatientStudy(**{k: _raw_text(ds, v, encodings) for k, v in _PATIENT_KEYWORDS.items()})
    thickness = _geometry(ds, "SliceThickness", "PixelMeasuresSequence", count, 1)
    return DicomHeader(
        reference=reference,
        patient=patient,
        modality=_raw_text(ds, "Modality", encodings),
        photometric_interpretation=_raw_text(ds, "PhotometricInterpretation", encodings),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        bits_allocated=_int(ds, "BitsAllocated"),
        bits_stored=_int(ds, "BitsStored"),
        high_bit=_int(ds, "HighBit"),
        pixel_representation=_int(ds, "PixelRepresentation"),
        samples_per_pixel=_int(ds, "SamplesPerPixel"),
        number_of_frames=number_of_frames,
        frames=tuple(range(1, count + 1)),
        pixel_spacing_mm=_geometry(ds, "PixelSpacing", "PixelMeasuresSequence", count, 2),
        imager_pixel_spacing_mm=_geometry(
            ds, "ImagerPixelSpacing", "PixelMeasuresSequence", count, 2
        ),
        slice_thickness_mm=thickness[0] if thickness else None,
        image_position_patient=_geometry(
            ds, "ImagePositionPatient", "PlanePositionSequence", count, 3
        ),
        image_orientation_patient=_geometry(
            ds, "ImageOrientationPatient", "PlaneOrientationSequence", count, 6
        ),
    )
