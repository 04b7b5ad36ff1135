"""Exports carry what the reviewers did; `vision train --data EXPORT` reads them unchanged."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.review.conftest import act, png, upload
from vision.datasets.detection import load_coco, load_voc
from vision.datasets.segmentation import load_folder


def read_png(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _reviewed_detection(clients) -> tuple[int, dict]:
    """A detection case: defect moved, dust rejected, one dust added; corrected by rev2."""
    rev = clients["rev2"]
    case = upload(rev, "boxes-x", png(np.full((128, 128, 3), 60, np.uint8)))
    by_label = {f["label"]: f["id"] for f in case["findings"]}
    act(rev, case["id"], action="claim")
    act(rev, case["id"], action="move", finding_id=by_label["defect"], box=[20, 22, 60, 64])
    act(rev, case["id"], action="reject", finding_id=by_label["dust"], reason="dust on lens")
    act(rev, case["id"], action="add", label="dust", box=[5, 6, 15, 18])
    assert act(rev, case["id"], action="finish").json()["status"] == "corrected"
    return case["id"], by_label


def _export(client, tmp_path: Path, **params) -> Path:
    answer = client.get("/review/api/export", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    out = tmp_path / params["format"]
    zipfile.ZipFile(io.BytesIO(answer.content)).extractall(out)
    return out


def test_coco_export_matches_the_actions(clients, tmp_path: Path) -> None:
    case_id, by_label = _reviewed_detection(clients)
    out = _export(clients["sup"], tmp_path, format="coco", model="boxes-x")
    coco = json.loads((out / "annotations.json").read_text())
    mine = [a for a in coco["annotations"] if a["image_id"] == case_id]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    got = sorted(
        (names[a["category_id"]], a["bbox"], a["origin"], a["review_status"]) for a in mine
    )
    assert got == [
        ("defect", [20, 22, 40, 42], "ai", "corrected"),
        ("dust", [5, 6, 10, 12], "human", "accepted"),
    ]
    assert {a["reviewer"] for a in mine} == {"rev2"}
    assert {(a["labelled_by"], a["reviewed_by"]) for a in mine} == {("rev2", "rev2")}
    assert by_label["dust"] not in {a["finding_id"] for a in mine}  # rejected: left out
    image = next(i for i in coco["images"] if i["id"] == case_id)
    assert image["case_status"] == "corrected" and (out / image["file_name"]).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(c for c in manifest["cases"] if c["id"] == case_id)
    assert entry == {**entry, "status": "corrected", "reviewer": "rev2", "annotations": 2}
    samples, classes = load_coco(out / "annotations.json")
    sample = next(s for s in samples if s.image.name == f"case-{case_id}.png")
    assert classes == ("defect", "dust")
    assert sorted(sample.boxes.tolist()) == [[5, 6, 15, 18], [20, 22, 60, 64]]


def test_voc_export_reads_back(clients, tmp_path: Path) -> None:
    case_id, _ = _reviewed_detection(clients)
    out = _export(clients["rev1"], tmp_path, format="voc", model="boxes-x")
    samples, classes = load_voc(out, "train")
    sample = next(s for s in samples if s.image.name == f"case-{case_id}.png")
    assert sample.image.is_file()
    got = sorted(zip([classes[i] for i in sample.labels], sample.boxes.tolist(), strict=True))
    assert got == [("defect", [20, 22, 60, 64]), ("dust", [5, 6, 15, 18])]
    xml = (out / "Annotations" / f"case-{case_id}.xml").read_text()
    assert "<origin>human</origin>" in xml and "<reviewer>rev2</reviewer>" in xml


def test_unreviewed_and_rejected_cases_stay_out(clients, tmp_path: Path) -> None:
    rev = clients["rev1"]
    pending = upload(rev, "boxes-x", png(np.zeros((128, 128, 3), np.uint8)))
    thrown = upload(rev, "boxes-x", png(np.zeros((128, 128, 3), np.uint8)))
    act(rev, thrown["id"], action="claim")
    act(rev, thrown["id"], action="reject", reason="wrong body part")
    out = _export(rev, tmp_path, format="coco", model="boxes-x", status="corrected,rejected")
    coco = json.loads((out / "annotations.json").read_text())
    ids = {i["id"] for i in coco["images"]}
    assert pending["id"] not in ids and thrown["id"] not in ids
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"id": thrown["id"], "why": "case rejected"} in manifest["skipped"]
    assert rev.get("/review/api/export", params={"format": "tiff"}).status_code == 400


def test_mask_export_uses_the_painted_mask(clients, tmp_path: Path) -> None:
    rev = clients["rev1"]
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:24, 8:24] = 255
    case = upload(rev, "bright-x", png(image))
    act(rev, case["id"], action="claim")
    painted = np.zeros((64, 64), np.uint8)
    painted[30:40, 30:50] = 255
    b64 = base64.b64encode(png(painted)).decode()
    act(rev, case["id"], action="paint", label="bright", mask_png_b64=b64)
    act(rev, case["id"], action="finish")
    out = _export(rev, tmp_path, format="masks", model="bright-x")
    mask = read_png((out / "masks" / f"case-{case['id']}.png").read_bytes())
    assert (mask > 127).sum() == 200 and mask[35, 40] == 255 and mask[10, 10] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(c for c in manifest["cases"] if c["id"] == case["id"])
    assert entry["annotations"] == {"bright": "human"}
    samples = load_folder(out / "images", out / "masks")
    assert any(s.name == f"case-{case['id']}" and s.mask.sum() == 200 for s in samples)


def test_report_counts_against_the_reviewed_truth(clients) -> None:
    _reviewed_detection(clients)
    report = clients["sup"].get("/review/api/report", params={"model": "boxes-x"}).json()
    assert report["n_cases"] >= 1 and report["iou_threshold"] == 0.5
    by_label = {c["label"]: c for c in report["classes"]}
    dust = by_label["dust"]
    assert dust["fp"] >= 1 and dust["fn"] >= 1  # the rejected AI dust, the added human dust
    for row in report["classes"]:
        assert row["n_truth"] == row["tp"] + row["fn"]
        if row["precision"] is not None:
            assert row["precision"] == pytest.approx(row["tp"] / row["n_predicted"])
    assert clients["sup"].get("/review/api/report").status_code == 400
    params = {"model": "boxes-x", "since": "2999-01-01"}
    future = clients["sup"].get("/review/api/report", params=params)
    assert future.json()["n_cases"] == 0


def test_offline_export_and_report_commands(clients, server, tmp_path: Path, capsys) -> None:
    from app.cli import main

    case_id, _ = _reviewed_detection(clients)
    data_dir, out = str(server.tool.settings.data_dir), tmp_path / "export.zip"
    argv = ["review", "export", "--dir", data_dir, "--format", "voc", "--model", "boxes-x"]
    assert main([*argv, "--out", str(out)]) == 0
    zipfile.ZipFile(out).extractall(tmp_path / "voc")
    samples, _ = load_voc(tmp_path / "voc", "train")
    assert any(s.image.name == f"case-{case_id}.png" for s in samples)
    capsys.readouterr()
    assert main(["review", "report", "--dir", data_dir, "--model", "boxes-x"]) == 0
    assert json.loads(capsys.readouterr().out)["n_cases"] >= 1
    assert main(["review", "report", "--dir", str(tmp_path / "none"), "--model", "m"]) == 2
    assert main([*argv[:-2], "--since", "yesterday", "--out", str(out)]) == 2


def test_report_counts_pixels_for_segmentation(clients) -> None:
    rev = clients["rev2"]
    image = np.zeros((64, 64, 3), np.uint8)
    image[0:10, 0:10] = 255  # the model finds 100 pixels
    case = upload(rev, "bright-x", png(image))
    act(rev, case["id"], action="claim")
    painted = np.zeros((64, 64), np.uint8)
    painted[0:10, 0:20] = 255  # the truth has 200, the 100 found among them
    b64 = base64.b64encode(png(painted)).decode()
    act(rev, case["id"], action="paint", label="bright", mask_png_b64=b64)
    act(rev, case["id"], action="finish")
    since = str(case["created_at"] - 0.001)
    params = {"model": "bright-x", "since": since}
    report = rev.get("/review/api/report", params=params).json()
    [bright] = [c for c in report["classes"] if c["label"] == "bright"]
    assert report["n_cases"] == 1
    assert bright["pixel_precision"] == 1.0 and bright["pixel_recall"] == 0.5


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the train extra")
@pytest.mark.timeout(900)
def test_round_trip_cases_export_train(clients, tmp_path: Path) -> None:
    # Enough images for a held-out one and two full batches: the trainer counts steps.
    for _ in range(5):
        _reviewed_detection(clients)
    out = _export(clients["sup"], tmp_path, format="coco", model="boxes-x")
    from app.cli import main

    run = tmp_path / "run"
    argv = [
        "train", "--task", "detection", "--format", "coco",
        "--data", str(out / "annotations.json"), "--val-split", "",
        "--epochs", "1", "--minutes", "3", "--size", "64", "--batch", "2", "--out", str(run),
    ]  # fmt: skip
    assert main(argv) == 0
    assert (run / "last.pt").is_file()
    log = json.loads((run / "log.json").read_text())
    assert log["recipe"]["format"] == "coco" and log["history"][-1]["step"] >= 2


def test_report_matches_boxes_on_their_own_frame(tmp_path: Path) -> None:
    from review.db import Database
    from review.report import ReportOptions, build
    from review.store import CaseDraft, CaseStore, FindingDraft, ImageInfo

    store = CaseStore(Database(tmp_path / "review.sqlite"), tmp_path)
    box = (10.0, 10.0, 30.0, 30.0)
    draft = CaseDraft(
        model="m", model_version="1", source="upload", kind="detection", labels=["spot"],
        frames=np.zeros((2, 40, 40), np.uint8), info=ImageInfo(width=40, height=40, frames=2),
        findings=[FindingDraft("spot", 0.9, box, frame=0)],
    )  # fmt: skip
    case_id = store.create(draft)
    with store.db.write() as conn:  # the AI box rejected on frame 0, the same box drawn on 1
        conn.execute("UPDATE findings SET status = 'rejected' WHERE case_id = ?", (case_id,))
        conn.execute(
            "INSERT INTO findings (case_id, label, score, x0, y0, x1, y1, origin, status, frame)"
            " VALUES (?, 'spot', 1.0, 10, 10, 30, 30, 'human', 'accepted', 1)",
            (case_id,),
        )
        conn.execute("UPDATE cases SET status = 'corrected' WHERE id = ?", (case_id,))
    [spot] = build(store, ReportOptions("m"))["classes"]
    assert (spot["tp"], spot["fp"], spot["fn"]) == (0, 1, 1)
