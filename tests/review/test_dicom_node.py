"""The DICOM node's results become cases: a CT slice over C-STORE (pynetdicom) -> node -> case."""

from __future__ import annotations

import io
import time
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from tests.review.conftest import PASSWORD, USERS, ReviewServer
from tests.review.test_dicom import PATIENT_ID, ct_slice

pynetdicom = pytest.importorskip("pynetdicom", reason="needs the dicom extra (pynetdicom)")


def test_a_received_slice_becomes_a_dicom_case(models: Path, tmp_path: Path) -> None:
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
    try:
        for name, role in USERS.items():
            running.tool.accounts.add_user(name, role, PASSWORD)
        ae = pynetdicom.AE(ae_title="SCANNER")
        ae.add_requested_context(pydicom.uid.CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", running.server.dicom.port, ae_title="VISION")
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(ct_slice())))
        assoc.release()
        assert status.Status == 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running.tool.recorder.flush()
            with running.tool.db.connect() as conn:
                row = conn.execute("SELECT id FROM cases WHERE source = 'dicom'").fetchone()
            if row is not None:
                break
            time.sleep(0.2)
        assert row is not None, "no case from the DICOM node in 120 s"
        with running.tool.db.connect() as conn:
            case = running.tool.store.case(conn, row[0])
        assert case["model"] == "bright-x" and case["patient"]["patient_id"] == PATIENT_ID
        [finding] = case["findings"]
        assert finding["label"] == "bright" and finding["has_heatmap"]
    finally:
        running.stop()
