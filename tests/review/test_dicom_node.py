"""The DICOM node's series become cases: CT slices over C-STORE (pynetdicom) -> node -> one case.

The case keeps the stored values (int16 HU), the file's windows and CT presets, one frame per
instance in InstanceNumber order, findings with their frame index, and the instances for a
DICOM SEG export that references them.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from review.images import read_png
from tests.review.conftest import PASSWORD, USERS, ReviewServer, act, sign_in
from tests.review.test_dicom import PATIENT_ID, PATIENT_NAME, ct_slice

pynetdicom = pytest.importorskip("pynetdicom", reason="needs the dicom extra (pynetdicom)")


def _series(count: int) -> list[pydicom.Dataset]:
    """`count` slices of one series; slice k (InstanceNumber k + 1) has its square moved k px."""
    first = pydicom.dcmread(io.BytesIO(ct_slice()))
    slices = []
    for k in range(count):
        ds = pydicom.dcmread(io.BytesIO(ct_slice()))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, first.SeriesInstanceUID
        ds.FrameOfReferenceUID, ds.InstanceNumber = first.FrameOfReferenceUID, k + 1
        ds.ImagePositionPatient = [0, 0, float(k)]
        stored = np.full((64, 64), 24, np.uint16)
        stored[16 + k : 40 + k, 8:32] = 2024
        ds.PixelData = stored.tobytes()
        slices.append(ds)
    return slices


def _start(models: Path, tmp_path: Path) -> ReviewServer:
    from dicom_node.model import NodeSettings
    from review.settings import ReviewSettings
    from serving.config import ServerConfig

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: ct\n    modality: [CT]\n    models: [bright-x]\n")
    node = NodeSettings(
        host="127.0.0.1", port=0, state_dir=tmp_path / "node", rules_file=rules,
        series_idle_s=0.5, min_free_disk_mb=1, heatmaps=True,
    )  # fmt: skip
    config = replace(ServerConfig(), models=models, host="127.0.0.1", grpc_port=-1, http_port=0)
    running = ReviewServer(config, ReviewSettings(data_dir=tmp_path / "review"))
    running.dicom = node
    running.start()
    for name, role in USERS.items():
        running.tool.accounts.add_user(name, role, PASSWORD)
    return running


def _send(running: ReviewServer, datasets: list[pydicom.Dataset]) -> None:
    ae = pynetdicom.AE(ae_title="SCANNER")
    ae.add_requested_context(pydicom.uid.CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", running.server.dicom.port, ae_title="VISION")
    assert assoc.is_established
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()


def _wait_case(running: ReviewServer) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running.tool.recorder.flush()
        with running.tool.db.connect() as conn:
            rows = conn.execute("SELECT id FROM cases WHERE source = 'dicom'").fetchall()
        if rows:
            time.sleep(1.0)  # a second (wrong) case would show up now
            with running.tool.db.connect() as conn:
                rows = conn.execute("SELECT id FROM cases WHERE source = 'dicom'").fetchall()
            assert len(rows) == 1, "the series became more than one case"
            return rows[0][0]
        time.sleep(0.2)
    raise AssertionError("no case from the DICOM node in 120 s")


def test_a_received_series_becomes_one_case_with_values_and_seg(
    models: Path, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    slices = _series(3)
    running = _start(models, tmp_path)
    try:
        _send(running, [slices[2], slices[0], slices[1]])  # out of order on purpose
        case_id = _wait_case(running)
        with running.tool.db.connect() as conn:
            case = running.tool.store.case(conn, case_id)
        assert case["model"] == "bright-x" and case["patient"]["patient_id"] == PATIENT_ID
        image = case["image"]
        assert image["frames"] == 3 and image["dtype"] == "int16" and image["dicom"]
        assert image["window"] == {"center": 40.0, "width": 400.0} and not image["invert"]
        assert "lung" in {p["name"] for p in image["presets"]}
        pixels = running.tool.store.files(case_id).pixels()
        assert pixels.shape == (3, 64, 64) and pixels.dtype == np.int16
        for k in range(3):  # frame k is the slice with InstanceNumber k + 1, in HU
            assert pixels[k, 16 + k, 8] == 1000 and pixels[k, 15 + k, 8] == -1000
        frames = sorted(f["frame"] for f in case["findings"])
        assert frames == [0, 1, 2], case["findings"]
        assert all(f["label"] == "bright" and f["has_heatmap"] for f in case["findings"])
        for finding in case["findings"]:  # each box found on its own slice
            assert abs(finding["box"][1] - (16 + finding["frame"])) <= 2, finding
        rev = sign_in(running, "rev1")
        assert act(rev, case_id, action="claim").status_code == 200
        for finding in case["findings"]:
            accepted = act(rev, case_id, action="accept", finding_id=finding["id"])
            assert accepted.status_code == 200, accepted.text
        assert act(rev, case_id, action="finish").status_code == 200
        answer = rev.get("/review/api/export", params={"format": "dicom-seg"})
        assert answer.status_code == 200, answer.text
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        seg = pydicom.dcmread(io.BytesIO(archive.read(f"seg/case-{case_id}.dcm")))
        referenced = [
            item.ReferencedSOPInstanceUID
            for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        ]
        assert sorted(referenced) == sorted(ds.SOPInstanceUID for ds in slices)
        assert seg.StudyInstanceUID == slices[0].StudyInstanceUID
        assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
        # a segmentation case: every slice marked with its own mask (the square one row lower
        # on each slice), every slice referenced
        marked = seg.pixel_array
        assert marked.shape[0] == 3
        uids = [ds.SOPInstanceUID for ds in slices]
        for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
            source = group.DerivationImageSequence[0].SourceImageSequence[0]
            k = uids.index(source.ReferencedSOPInstanceUID)
            assert int(marked[index].sum()) == 24 * 24
            assert marked[index][16 + k, 8] == 1 and marked[index][15 + k, 8] == 0
        for k in range(3):  # the page's mask of each frame is that frame's
            mask = rev.get(f"/review/api/cases/{case_id}/masks/bright.png", params={"frame": k})
            assert mask.status_code == 200, mask.text
            shown = read_png(mask.content) > 127
            assert shown[16 + k, 8] and not shown[15 + k, 8] and shown.sum() == 24 * 24
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert PATIENT_ID not in logged and str(PATIENT_NAME) not in logged
    finally:
        running.stop()
