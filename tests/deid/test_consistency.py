"""UIDs, pseudonyms and date shifts: consistent under one key, different under another."""

from __future__ import annotations

import datetime as dt

import numpy as np

from dicom_node.results import build_results
from serving.dataplane import Prediction
from tests.deid.helpers import KEY, OTHER_KEY, all_uids, fundus, sample_file
from tests.dicom_node.wrap import Study
from vision.deid import DeidOptions, deidentify
from vision.io.dicom_header import read_header
from vision.types import ClassMask, Image, SegmentationResult


def _prediction(ds) -> Prediction:
    header = read_header(ds)
    vessel = np.zeros((ds.Rows, ds.Columns), bool)
    vessel[10:20, 5:30] = True
    masks = [ClassMask(0, "background", ~vessel, 0.9), ClassMask(1, "vessel", vessel, 0.8)]
    image = Image(np.zeros((ds.Rows, ds.Columns, 3), np.uint8), "dicom", None, header)
    return Prediction("retina-vessels", "1", image, SegmentationResult(masks))


def test_seg_sr_gsps_still_reference_their_deidentified_source() -> None:
    source = fundus()
    results = build_results([source], [_prediction(source)], "retina-vessels", "1",
                            ["background", "vessel"])  # fmt: skip
    assert {str(r.Modality) for r in results} >= {"SEG", "SR", "PR"}
    new_source = deidentify(source, DeidOptions(), KEY).dataset
    for result in results:
        out = deidentify(result, DeidOptions(), KEY).dataset
        assert out.StudyInstanceUID == new_source.StudyInstanceUID
        assert out.PatientID == new_source.PatientID
        uids = all_uids(out)
        assert new_source.SOPInstanceUID in uids, f"{out.Modality} lost its source reference"
        assert new_source.SeriesInstanceUID in uids
        assert not uids & all_uids(source), f"{out.Modality} kept an original UID"


def test_same_key_same_output_other_key_other_output() -> None:
    source = sample_file("MR_small.dcm")
    a = deidentify(source, DeidOptions(retain_dates=True), KEY).dataset
    b = deidentify(source, DeidOptions(retain_dates=True), KEY).dataset
    c = deidentify(source, DeidOptions(retain_dates=True), OTHER_KEY).dataset
    assert a == b and a.SOPInstanceUID == b.SOPInstanceUID
    assert a.SOPInstanceUID != c.SOPInstanceUID and a.PatientID != c.PatientID
    assert len(a.SOPInstanceUID) <= 64 and all(len(u) <= 64 for u in all_uids(a))


def test_dates_shift_by_one_offset_per_patient_and_stay_valid() -> None:
    study = Study(date="20240229")
    first, second = fundus(study), fundus(study)
    other = fundus(Study(patient_id="SOMEONE-ELSE", date="20240229"))
    outs = [
        deidentify(d, DeidOptions(retain_dates=True), KEY).dataset for d in (first, second, other)
    ]
    day = dt.datetime.strptime
    offsets = [(day(o.StudyDate, "%Y%m%d") - day("20240229", "%Y%m%d")).days for o in outs]
    assert offsets[0] == offsets[1] != 0 and abs(offsets[0]) <= 365
    assert offsets[2] != offsets[0]
    out = outs[0]
    assert out.ContentDate == out.StudyDate  # the same offset for every date of the patient
    assert out.AcquisitionDateTime[:8] == out.StudyDate
    assert out.AcquisitionDateTime[8:] == first.AcquisitionDateTime[8:]  # time of day kept
    assert out.StudyTime == first.StudyTime
    assert out.PatientBirthDate == ""  # Z in the Basic Profile, no Modified Dates column


def test_without_the_dates_option_no_original_date_remains() -> None:
    source = sample_file("CT_small.dcm")
    out = deidentify(source, DeidOptions(), KEY).dataset
    originals = {str(e.value) for e in source.iterall() if e.VR in ("DA", "DT") and e.value}
    remaining = {str(e.value) for e in out.iterall() if e.VR in ("DA", "DT") and e.value}
    assert originals and not originals & remaining
