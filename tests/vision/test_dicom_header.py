"""The DICOM header kept beside the pixels: every field, absent fields, identifiers never shown."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.vision.dicom_files import make_dataset, make_dicom, to_bytes
from vision.errors import UnsupportedFormatError
from vision.io import (
    DicomHeader,
    PatientStudy,
    decode_dataset,
    decode_dicom,
    decode_image,
    read_header,
)

PATIENT = {
    "PatientID": "PID-7731-SECRET",
    "PatientName": "Doe^Jane^Q",
    "PatientBirthDate": "19800214",
    "PatientSex": "F",
    "PatientAge": "044Y",
    "StudyDate": "20240301",
    "StudyTime": "101530.25",
    "AccessionNumber": "ACC-99812",
    "ReferringPhysicianName": "Who^Doctor",
    "StudyID": "STUDY-4411",
    "StudyDescription": "Chest PA for Jane Doe",
}
UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.111",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.2.1125.222",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.2.1125.333",
}
GEOMETRY = {
    "Modality": "CT",
    "PixelSpacing": [0.5, 0.25],
    "ImagerPixelSpacing": [0.6, 0.3],
    "SliceThickness": 2.5,
    "ImagePositionPatient": [-120.0, -80.5, 33.25],
    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
}


def _full() -> Dataset:
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    return make_dataset(pixels, **PATIENT, **UIDS, **GEOMETRY)


def _secrets(ds: Dataset) -> list[str]:
    """Every identifying value of `ds`: patient/study attributes and instance UIDs."""
    values = [*PATIENT.values(), *UIDS.values(), str(ds.SOPInstanceUID)]
    return [v for v in values if len(v) > 1] + ["Doe", "Jane", "19800214"]


def test_every_field_is_read() -> None:
    ds = _full()
    image = decode_dicom(to_bytes(ds))
    header = image.dicom
    assert isinstance(header, DicomHeader)
    ref = header.reference
    assert ref.study_instance_uid == UIDS["StudyInstanceUID"]
    assert ref.series_instance_uid == UIDS["SeriesInstanceUID"]
    assert ref.frame_of_reference_uid == UIDS["FrameOfReferenceUID"]
    assert ref.sop_instance_uid == str(ds.SOPInstanceUID)
    assert ref.sop_class_uid == str(ds.SOPClassUID)
    patient = header.patient
    assert patient.patient_id == PATIENT["PatientID"]
    assert patient.patient_name == PATIENT["PatientName"]
    assert patient.patient_birth_date == PATIENT["PatientBirthDate"]
    assert patient.patient_sex == "F"
    assert patient.patient_age == "044Y"
    assert patient.study_date == PATIENT["StudyDate"]
    assert patient.study_time == PATIENT["StudyTime"]
    assert patient.accession_number == PATIENT["AccessionNumber"]
    assert patient.referring_physician_name == PATIENT["ReferringPhysicianName"]
    assert patient.study_id == PATIENT["StudyID"]
    assert patient.study_description == PATIENT["StudyDescription"]
    assert header.modality == "CT"
    assert header.photometric_interpretation == "MONOCHROME2"
    assert (header.rows, header.columns) == (3, 4)
    assert (header.bits_allocated, header.bits_stored, header.high_bit) == (16, 16, 15)
    assert (header.pixel_representation, header.samples_per_pixel) == (0, 1)
    assert header.number_of_frames is None and header.frames == (1,)
    assert header.pixel_spacing_mm == (0.5, 0.25)
    assert header.imager_pixel_spacing_mm == (0.6, 0.3)
    assert header.slice_thickness_mm == 2.5
    assert header.image_position_patient == (-120.0, -80.5, 33.25)
    assert header.image_orientation_patient == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert image.pixel_spacing_mm == (0.5, 0.25)  # unchanged behaviour


def test_absent_fields_are_none() -> None:
    header = decode_dicom(make_dicom(np.zeros((2, 2), np.uint8))).dicom
    assert header is not None
    assert header.patient == PatientStudy()
    ref = header.reference
    assert ref.study_instance_uid is None and ref.frame_of_reference_uid is None
    assert ref.sop_instance_uid is not None
    for name in (
        "number_of_frames",
        "pixel_spacing_mm",
        "imager_pixel_spacing_mm",
        "slice_thickness_mm",
        "image_position_patient",
        "image_orientation_patient",
    ):
        assert getattr(header, name) is None, name
    assert header.frames == (1,)


def test_malformed_geometry_is_none() -> None:
    ds = make_dataset(np.zeros((2, 2), np.uint8))
    ds.PixelSpacing = [0.5, 0.5, 0.5]
    ds.ImageOrientationPatient = [1, 0, 0]
    header = read_header(ds)
    assert header.pixel_spacing_mm is None and header.image_orientation_patient is None


def _functional_group(**items: Dataset) -> Dataset:
    group = Dataset()
    for keyword, item in items.items():
        setattr(group, keyword, Sequence([item]))
    return group


def _enhanced(frames: int) -> Dataset:
    ds = make_dataset(np.zeros((frames, 2, 3), np.uint8), NumberOfFrames=frames)
    measures = Dataset()
    measures.PixelSpacing = [0.7, 0.8]
    measures.SliceThickness = 1.25
    orientation = Dataset()
    orientation.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.SharedFunctionalGroupsSequence = Sequence(
        [_functional_group(PixelMeasuresSequence=measures, PlaneOrientationSequence=orientation)]
    )
    per_frame = []
    for k in range(frames):
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, float(k)]
        per_frame.append(_functional_group(PlanePositionSequence=position))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


def test_multi_frame_header_from_functional_groups() -> None:
    header = read_header(_enhanced(3))
    assert header.number_of_frames == 3 and header.frames == (1, 2, 3)
    assert (header.rows, header.columns) == (2, 3)
    assert header.pixel_spacing_mm == (0.7, 0.8)
    assert header.slice_thickness_mm == 1.25
    assert header.image_orientation_patient == (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    assert header.image_position_patient is None  # differs per frame: no single value


def test_single_frame_enhanced_takes_the_per_frame_position() -> None:
    header = read_header(_enhanced(1))
    assert header.number_of_frames == 1 and header.frames == (1,)
    assert header.image_position_patient == (0.0, 0.0, 0.0)


def test_multi_frame_decoding_still_refused() -> None:
    with pytest.raises(UnsupportedFormatError, match="multi-frame"):
        decode_dicom(to_bytes(_enhanced(3)))


def test_decode_dataset_in_memory_matches_the_file() -> None:
    ds = _full()
    from_file = decode_dicom(to_bytes(ds))
    in_memory = decode_dataset(ds)
    np.testing.assert_array_equal(in_memory.pixels, from_file.pixels)
    assert in_memory.dicom == from_file.dicom
    assert in_memory.pixel_spacing_mm == from_file.pixel_spacing_mm


def test_character_set_is_honoured() -> None:
    ds = make_dataset(np.zeros((2, 2), np.uint8), SpecificCharacterSet="ISO_IR 100")
    ds.PatientName = "Müller^Zoë"
    assert decode_dicom(to_bytes(ds)).dicom.patient.patient_name == "Müller^Zoë"


def test_non_dicom_images_have_no_header(png_bytes: bytes) -> None:
    assert decode_image(png_bytes).dicom is None


@pytest.fixture
def png_bytes() -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.zeros((2, 2), np.uint8))
    assert ok
    return encoded.tobytes()


def test_repr_str_and_log_lines_hold_no_identifier(caplog: pytest.LogCaptureFixture) -> None:
    ds = _full()
    image = decode_dicom(to_bytes(ds))
    logger = logging.getLogger("tests.dicom_header")
    with caplog.at_level(logging.DEBUG):
        logger.info("decoded %s", image.dicom)
        logger.info("image %r", image)
        logger.info("parts %s %r", image.dicom.patient, image.dicom.reference)
    texts = [repr(image), str(image), repr(image.dicom), str(image.dicom), caplog.text]
    for text in texts:
        for secret in _secrets(ds):
            assert secret not in text, f"{secret!r} leaked"
    assert "PatientStudy(11 attributes <hidden>)" in repr(image.dicom)
    assert "sop_class_uid='1.2.840.10008.5.1.4.1.1.7'" in repr(image.dicom)  # not identifying
    assert "pixel_spacing_mm=(0.5, 0.25)" in repr(image.dicom)


def test_malformed_patient_values_are_not_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """pydicom's validation and DA conversion quote bad values in warnings, logs and errors
    ("Unable to convert 'SECRET-DOB' to 'DA' object"); the header reads the bytes instead."""
    monkeypatch.setattr(pydicom_config.settings, "writing_validation_mode", pydicom_config.IGNORE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom validates on assignment too
        ds = make_dataset(np.zeros((2, 2), np.uint8))
        ds.PatientBirthDate = "SECRET-DOB"
        ds.PatientID = "SECRET-ID-" + "x" * 70  # longer than LO allows
        data = to_bytes(ds)
    monkeypatch.setattr(pydicom_config.settings, "reading_validation_mode", pydicom_config.WARN)
    monkeypatch.setattr(pydicom_config, "datetime_conversion", True)
    caplog.clear()
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        header = decode_dicom(data).dicom
    assert header.patient.patient_birth_date == "SECRET-DOB"
    assert header.patient.patient_id.startswith("SECRET-ID-")
    emitted = caplog.text + " ".join(str(w.message) for w in caught)
    assert "SECRET" not in emitted
