"""What a result needs to refer back to the DICOM object it came from.

`DicomHeader` holds the identifying UIDs (`DicomReference`), the Patient and General Study
module attributes (`PatientStudy`), and the image geometry. Identifying values are held, never
shown: the reprs of `DicomReference` and `PatientStudy` name no value, so a header can be logged
or put in an error message without leaking a patient identifier. UIDs count as identifying
(the PS3.15 Basic Application Level Confidentiality Profile replaces them).

Patient and study text is read from the encoded bytes without pydicom's value validation, whose
warnings quote the offending value (and so would put a malformed birth date into the log).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.values import TEXT_VR_DELIMS

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


def _raw_text(ds: Dataset, keyword: str, encodings: list[str]) -> str | None:
    """The element's text without pydicom validation; None when absent or empty."""
    tag = Tag(keyword)
    if tag not in ds:
        return None
    value = ds.get_item(tag).value
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


def _as(value: Any, kind: type) -> Any:
    """`kind(value)`, or None when absent, empty or not convertible."""
    try:
        return kind(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        items = tuple(float(v) for v in (value if hasattr(value, "__len__") else [value]))
    except (TypeError, ValueError):
        return None
    return items if len(items) == count else None


def _group_item(ds: Dataset, sequence: str, item: str, keyword: str) -> Any:
    """`keyword` inside `sequence[0].item[0]`, or None."""
    outer = ds.get(sequence)
    if not outer:
        return None
    inner = outer[0].get(item)
    return inner[0].get(keyword) if inner else None


def _geometry(ds: Dataset, keyword: str, item: str, frames: int) -> Any:
    """A top-level attribute, else the shared (then, for one frame, the per-frame) group's."""
    value = ds.get(keyword)
    if value is None:
        value = _group_item(ds, "SharedFunctionalGroupsSequence", item, keyword)
    if value is None and frames == 1:
        value = _group_item(ds, "PerFrameFunctionalGroupsSequence", item, keyword)
    return value


def _pair(ds: Dataset, keyword: str, frames: int) -> tuple[float, float] | None:
    return _floats(_geometry(ds, keyword, "PixelMeasuresSequence", frames), 2)  # type: ignore[return-value]


def read_header(ds: Dataset) -> DicomHeader:
    """The `DicomHeader` of a dataset (never raises for absent or malformed attributes)."""
    encodings = _encodings(ds)
    number_of_frames = _as(ds.get("NumberOfFrames"), int)
    count = number_of_frames if number_of_frames and number_of_frames > 0 else 1
    reference = DicomReference(**{k: _raw_text(ds, v, encodings) for k, v in _UID_KEYWORDS.items()})
    patient = PatientStudy(**{k: _raw_text(ds, v, encodings) for k, v in _PATIENT_KEYWORDS.items()})
    thickness = _geometry(ds, "SliceThickness", "PixelMeasuresSequence", count)
    position = _geometry(ds, "ImagePositionPatient", "PlanePositionSequence", count)
    orientation = _geometry(ds, "ImageOrientationPatient", "PlaneOrientationSequence", count)
    return DicomHeader(
        reference=reference,
        patient=patient,
        modality=_as(ds.get("Modality"), str),
        photometric_interpretation=_as(ds.get("PhotometricInterpretation"), str),
        rows=_as(ds.get("Rows"), int),
        columns=_as(ds.get("Columns"), int),
        bits_allocated=_as(ds.get("BitsAllocated"), int),
        bits_stored=_as(ds.get("BitsStored"), int),
        high_bit=_as(ds.get("HighBit"), int),
        pixel_representation=_as(ds.get("PixelRepresentation"), int),
        samples_per_pixel=_as(ds.get("SamplesPerPixel"), int),
        number_of_frames=number_of_frames,
        frames=tuple(range(1, count + 1)),
        pixel_spacing_mm=_pair(ds, "PixelSpacing", count),
        imager_pixel_spacing_mm=_pair(ds, "ImagerPixelSpacing", count),
        slice_thickness_mm=_as(thickness, float),
        image_position_patient=_floats(position, 3),  # type: ignore[arg-type]
        image_orientation_patient=_floats(orientation, 6),  # type: ignore[arg-type]
    )
