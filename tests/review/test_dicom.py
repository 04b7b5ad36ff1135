"""DICOM uploads: stored values for window/level, presets, patient attributes (shown, never
logged), and the reviewed result as a DICOM SEG that references the source."""

from __future__ import annotations

import base64
import io
import json
import logging
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from review.images import read_png as images_read_png
from tests.review.conftest import act, png, upload
from tests.review.test_export import read_png

PATIENT_NAME = "Doe^Jane^Q"
PATIENT_ID = "MRN-7734-XY"


def ct_slice(size: int = 64, noise_hu: float = 0.0) -> bytes:
    """A CT slice: stored uint16 with intercept -1024; a bright (1000 HU) square on air, with
    Gaussian noise of `noise_hu` (a scanner's is some 10 HU: realistic compression ratios)."""
    stored = np.full((size, size), 24.0)  # -1000 HU
    k = size // 64
    stored[16 * k : 40 * k, 8 * k : 32 * k] = 2024  # 1000 HU
    if noise_hu:
        stored += np.random.default_rng(0).normal(0, noise_hu, stored.shape)
    stored = np.clip(stored, 0, 4095).round().astype(np.uint16)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        PATIENT_NAME, PATIENT_ID, "19700101", "F",
    )  # fmt: skip
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261201", "101010", "A1", "S1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "test"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_upload_keeps_values_windows_and_patient(clients, server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    rev = clients["rev1"]
    case = upload(rev, "bright-x", ct_slice(), "slice.dcm")
    opened = rev.get(f"/review/api/cases/{case['id']}").json()
    image = opened["image"]
    assert image["dicom"] and image["dtype"] == "int16" and image["study_uid"]
    assert image["window"] == {"center": 40.0, "width": 400.0}
    names = [p["name"] for p in image["presets"]]
    assert "lung" in names and "bone" in names
    assert opened["patient"]["patient_name"] == PATIENT_NAME
    assert opened["patient"]["patient_id"] == PATIENT_ID
    raw = rev.get(f"/review/api/cases/{case['id']}/pixels")
    values = np.frombuffer(raw.content, "<i2").reshape(64, 64)
    assert raw.headers["x-dtype"] == "int16"
    assert values[20, 10] == 1000 and values[0, 0] == -1000
    [finding] = opened["findings"]
    assert finding["label"] == "bright" and finding["box"] == [8, 16, 32, 40]
    with server.tool.db.connect() as conn:
        listing = json.dumps(
            [dict(r) for r in conn.execute("SELECT * FROM cases WHERE id = ?", (case["id"],))]
        )
    assert PATIENT_NAME in listing  # stored, because the source carried it
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert PATIENT_NAME not in logged and PATIENT_ID not in logged
    cases = rev.get("/review/api/cases", params={"q": str(case["id"])}).json()
    assert PATIENT_ID not in json.dumps(cases)  # the worklist carries no identifiers


def test_multi_frame_upload_keeps_every_frame_and_runs_the_model_on_each(clients) -> None:
    ds = pydicom.dcmread(io.BytesIO(ct_slice()))
    air = np.full_like(ds.pixel_array, 124)  # frame 1: nothing to find
    moved = np.roll(ds.pixel_array, 4, axis=0) + 200  # frame 2: the square 4 rows lower
    frames = np.stack([ds.pixel_array, air, moved])
    ds.NumberOfFrames, ds.PixelData = 3, frames.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    rev = clients["rev1"]
    case = upload(rev, "bright-x", buffer.getvalue(), "multi.dcm")
    assert case["image"]["frames"] == 3
    found = sorted((f["frame"], f["box"]) for f in case["findings"])
    assert found == [(0, [8, 16, 32, 40]), (2, [8, 20, 32, 44])]
    assert act(rev, case["id"], action="claim").status_code == 200
    missed = dict(action="add", label="bright", box=[1, 1, 9, 9])
    assert act(rev, case["id"], **missed, frame=3).status_code == 400  # frames 0 .. 2
    assert act(rev, case["id"], **missed, frame=1).status_code == 200
    again = rev.get(f"/review/api/cases/{case['id']}").json()
    added = [f for f in again["findings"] if f["origin"] == "human"]
    assert [(f["frame"], f["box"]) for f in added] == [(1, [1, 1, 9, 9])]
    _masks_are_per_frame(rev, case["id"])
    for f in case["findings"]:
        assert act(rev, case["id"], action="accept", finding_id=f["id"]).status_code == 200
    assert act(rev, case["id"], action="finish").status_code == 200
    answer = rev.get("/review/api/export", params={"format": "coco", "model": "bright-x"})
    assert answer.status_code == 200, answer.text
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    coco = json.loads(archive.read("annotations.json"))
    images = {i["frame"]: i for i in coco["images"] if i["case_id"] == case["id"]}
    assert sorted(images) == [0, 1, 2] and images[0]["id"] == case["id"]
    boxes = {
        k: sorted(a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"])
        for k, image in images.items()
    }
    assert boxes == {0: [[8, 16, 24, 24]], 1: [[1, 1, 8, 8]], 2: [[8, 20, 24, 24]]}
    third = images_read_png(archive.read(images[2]["file_name"]))
    assert third[22, 10] == 255 and third[18, 10] == 0  # frame 2's own pixels, windowed
    _masks_export_has_every_frame(rev, case["id"])
    since = str(case["created_at"] - 0.001)
    report = rev.get("/review/api/report", params={"model": "bright-x", "since": since}).json()
    [bright] = [c for c in report["classes"] if c["label"] == "bright"]
    found = 2 * 24 * 24  # frames 0 and 2, as the truth; frame 1's 40 painted pixels missed
    assert bright["pixel_precision"] == 1.0 and bright["pixel_recall"] == found / (found + 40)
    segs = rev.get("/review/api/export", params={"format": "dicom-seg", "model": "bright-x"})
    assert segs.status_code == 200, segs.text
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(segs.content)).read("manifest.json"))
    [skipped] = [s for s in manifest["skipped"] if s["id"] == case["id"]]
    assert "after the first frame" in skipped["why"]  # a legacy multi-frame file: one plane
    third = rev.get(f"/review/api/cases/{case['id']}/pixels", params={"frame": 2})
    assert np.frombuffer(third.content, "<i2").reshape(64, 64)[0, 0] == -800
    assert (
        rev.get(f"/review/api/cases/{case['id']}/image.png", params={"frame": 2}).status_code == 200
    )
    assert rev.get(f"/review/api/cases/{case['id']}/pixels", params={"frame": 3}).status_code == 400


def _mask(rev, case_id: int, frame: int):
    return rev.get(f"/review/api/cases/{case_id}/masks/bright.png", params={"frame": frame})


def _masks_are_per_frame(rev, case_id: int) -> None:
    """Frame 0 and 2 have their own AI masks, frame 1 none until painted; paint keeps frames."""
    first, third = (read_png(_mask(rev, case_id, k).content) > 127 for k in (0, 2))
    assert first[16, 8] and not first[40, 8] and third[40, 8] and not third[16, 8]
    assert _mask(rev, case_id, 1).status_code == 404
    assert _mask(rev, case_id, 3).status_code == 400
    painted = np.zeros((64, 64), np.uint8)
    painted[50:54, 50:60] = 255
    b64 = base64.b64encode(png(painted)).decode()
    paint = dict(action="paint", label="bright", mask_png_b64=b64)
    assert act(rev, case_id, **paint, frame=3).status_code == 400
    assert act(rev, case_id, **paint, frame=1).status_code == 200
    assert (read_png(_mask(rev, case_id, 1).content) > 127).sum() == 40
    assert ((read_png(_mask(rev, case_id, 0).content) > 127) == first).all()


def _masks_export_has_every_frame(rev, case_id: int) -> None:
    answer = rev.get("/review/api/export", params={"format": "masks", "model": "bright-x"})
    assert answer.status_code == 200, answer.text
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    stem = f"case-{case_id}"
    masks = {
        k: images_read_png(archive.read(f"masks/{stem}{suffix}.png")) > 127
        for k, suffix in ((0, ""), (1, "-f1"), (2, "-f2"))
    }
    assert masks[0][16, 8] and masks[2][40, 8] and not masks[2][16, 8]
    assert masks[1].sum() == 40 and masks[1][50, 50]
    assert f"images/{stem}-f2.png" in archive.namelist()
    assert f"masks_by_label/bright/{stem}-f1.png" in archive.namelist()


def test_a_2048_square_16_bit_upload(clients) -> None:
    rev = clients["rev2"]
    case = upload(rev, "bright-x", ct_slice(2048), "big.dcm")
    assert (case["image"]["width"], case["image"]["height"]) == (2048, 2048)
    [finding] = case["findings"]
    assert finding["box"] == pytest.approx([256, 512, 1024, 1280], abs=32)
    raw = rev.get(f"/review/api/cases/{case['id']}/pixels", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert len(raw.content) == 2048 * 2048 * 2  # httpx inflates it


def test_monochrome1_is_kept_as_stored_and_marked_inverted(clients) -> None:
    ds = pydicom.dcmread(io.BytesIO(ct_slice()))
    ds.PhotometricInterpretation = "MONOCHROME1"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    rev = clients["rev1"]
    case = upload(rev, "bright-x", buffer.getvalue(), "mono1.dcm")
    assert case["image"]["invert"] is True
    values = np.frombuffer(rev.get(f"/review/api/cases/{case['id']}/pixels").content, "<i2")
    assert values.reshape(64, 64)[20, 10] == 1000  # as stored
    shown = read_png(rev.get(f"/review/api/cases/{case['id']}/image.png").content)
    assert shown[20, 10] == 0 and shown[0, 0] == 255  # high values dark
    plain = upload(rev, "bright-x", ct_slice(), "mono2.dcm")
    assert plain["image"]["invert"] is False


def test_png_cases_carry_no_patient(clients) -> None:
    case = upload(clients["rev1"], "bright-x", png(np.zeros((64, 64, 3), np.uint8)))
    assert case["patient"] == {} and case["image"]["dicom"] is False


def test_dicom_seg_export_references_the_source(clients) -> None:
    rev = clients["rev2"]
    case = upload(rev, "bright-x", ct_slice(), "slice.dcm")
    act(rev, case["id"], action="claim")
    painted = np.zeros((64, 64), np.uint8)
    painted[16:40, 8:20] = 255
    b64 = base64.b64encode(png(painted)).decode()
    assert act(rev, case["id"], action="paint", label="bright", mask_png_b64=b64).status_code == 200
    assert act(rev, case["id"], action="finish").json()["status"] == "corrected"
    png_case = upload(rev, "bright-x", png(np.full((64, 64, 3), 255, np.uint8)))
    act(rev, png_case["id"], action="claim")
    act(rev, png_case["id"], action="finish")
    answer = rev.get("/review/api/export", params={"format": "dicom-seg", "model": "bright-x"})
    assert answer.status_code == 200, answer.text
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    seg = pydicom.dcmread(io.BytesIO(archive.read(f"seg/case-{case['id']}.dcm")))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.ContentCreatorName.family_name == "rev2"
    assert seg.ContentDescription == "review corrected"
    assert seg.SegmentSequence[0].SegmentLabel == "bright"
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    assert seg.PatientName == PATIENT_NAME
    assert seg.StudyInstanceUID == case["image"]["study_uid"]
    assert int(np.count_nonzero(seg.pixel_array)) == 24 * 12
    manifest = json.loads(archive.read("manifest.json"))
    assert {"id": png_case["id"], "why": "no DICOM or no mark"} in manifest["skipped"]
