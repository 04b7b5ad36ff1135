"""Which served results become cases: the capture policy, through the real data plane and gRPC."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from review.settings import CaptureMode, CapturePolicy, load_settings
from serving.dataplane import ImageSource, PredictOptions
from tests.review.conftest import ReviewServer, png, start_review_server
from tests.review.test_dicom import PATIENT_ID, ct_slice
from vision.errors import ConfigError

POLICY = {"models": {"bright": {"api": "failed", "line": "off"}, "boxes": {"line": "all"}}}
WHITE = png(np.full((64, 64, 3), 255, np.uint8))
BLACK = png(np.zeros((64, 64, 3), np.uint8))


@pytest.fixture(scope="module")
def capturing(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewServer]:
    running = start_review_server(models, tmp_path_factory.mktemp("review-capture"), POLICY)
    yield running
    running.stop()


def _predict(server: ReviewServer, task: str, model: str, data: bytes, origin: str) -> None:
    plane = server.server.plane
    call = plane.predict(task, model, "", ImageSource(encoded=data), PredictOptions(), None, origin)
    asyncio.run_coroutine_threadsafe(call, server.loop).result(60)


def _cases(server: ReviewServer) -> list[tuple[str, str]]:
    server.tool.recorder.flush()
    with server.tool.db.connect() as conn:
        rows = conn.execute("SELECT model, source FROM cases ORDER BY id").fetchall()
    return [(r["model"], r["source"]) for r in rows]


def test_results_are_captured_by_model_and_source(capturing: ReviewServer) -> None:
    before = len(_cases(capturing))
    _predict(capturing, "detection", "boxes", BLACK, "vision.v1")  # api: off (built-in)
    _predict(capturing, "detection", "boxes", BLACK, "stream")  # boxes on a line: all
    _predict(capturing, "segmentation", "bright", WHITE, "stream")  # bright on a line: off
    _predict(capturing, "segmentation", "bright-scored", WHITE, "stream")  # line: off (built-in)
    _predict(capturing, "segmentation", "bright", BLACK, "vision.v1")  # failed? no finding
    _predict(capturing, "segmentation", "bright", WHITE, "dicom")  # dicom: all (built-in)
    with grpc.insecure_channel(capturing.grpc_address) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        request = pb.SegmentRequest(
            model=pb.ModelRef(name="bright"), image=pb.ImageInput(encoded=WHITE)
        )
        stub.Segment(request, timeout=60)  # api, failed: a bright mask -> captured
    assert _cases(capturing)[before:] == [
        ("boxes", "line"), ("bright", "dicom"), ("bright", "api"),
    ]  # fmt: skip


def test_capture_is_counted_on_metrics(capturing: ReviewServer) -> None:
    _predict(capturing, "detection", "boxes", BLACK, "stream")
    capturing.tool.recorder.flush()
    text = httpx.get(f"{capturing.url}/metrics", timeout=60).text
    line = next(
        row for row in text.splitlines()
        if row.startswith("vision_review_cases_total") and 'source="line"' in row
        and 'outcome="recorded"' in row
    )  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) >= 1


def test_captured_case_holds_the_result(capturing: ReviewServer) -> None:
    _predict(capturing, "detection", "boxes", BLACK, "stream")
    capturing.tool.recorder.flush()
    with capturing.tool.db.connect() as conn:
        case_id = conn.execute("SELECT MAX(id) FROM cases").fetchone()[0]
        case = capturing.tool.store.case(conn, case_id)
    assert case["source"] == "line" and case["status"] == "new" and case["model_version"] == "1"
    assert sorted(f["label"] for f in case["findings"]) == ["defect", "dust"]
    assert case["patient"] == {}
    assert capturing.tool.recorder.dropped == 0


def test_dicom_results_keep_the_patient_and_study(capturing: ReviewServer) -> None:
    _predict(capturing, "segmentation", "bright", ct_slice(), "dicom")
    capturing.tool.recorder.flush()
    with capturing.tool.db.connect() as conn:
        case_id = conn.execute("SELECT MAX(id) FROM cases").fetchone()[0]
        case = capturing.tool.store.case(conn, case_id)
    assert case["source"] == "dicom" and case["patient"]["patient_id"] == PATIENT_ID
    assert case["image"]["dicom"] and case["image"]["study_uid"]
    assert case["image"]["dtype"] == "uint8"  # the node's decoded image, windowed


def test_policy_precedence_and_modes() -> None:
    policy = CapturePolicy.parse(POLICY)
    assert policy.mode("bright", "api").kind == "failed"
    assert policy.mode("bright", "line").kind == "off"
    assert policy.mode("boxes", "line").kind == "all"
    assert policy.mode("other", "dicom").kind == "all"
    assert policy.mode("other", "line").kind == "off"
    everything = CapturePolicy.parse({"default": "all", "sources": {"line": "sample:0.01"}})
    assert everything.mode("x", "api").kind == "all"
    assert everything.mode("x", "line") == CaptureMode("sample", 0.01)
    assert CapturePolicy.parse({"models": {"m": "off"}}).mode("m", "dicom").kind == "off"


def test_sampling_takes_about_its_share() -> None:
    mode, rng = CaptureMode.parse("sample:0.25", "x"), random.Random(3)
    taken = sum(mode.wants(False, rng) for _ in range(4000))
    assert 800 < taken < 1200
    failed = CaptureMode.parse("failed", "x")
    assert failed.wants(True, rng) and not failed.wants(False, rng)


@pytest.mark.parametrize("text", ["sample:0", "sample:2", "sample:x", "some", 3])
def test_bad_modes_say_what_is_accepted(text) -> None:
    with pytest.raises(ConfigError, match="all, failed, sample:P"):
        CaptureMode.parse(text, "capture.default")


def test_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "review.yaml"
    config.write_text("session: {idle_s: 60}\ncapture:\n  sources: {line: failed}\n")
    settings = load_settings(tmp_path / "data", config)
    assert settings.idle_s == 60 and settings.capture.mode("m", "line").kind == "failed"
    config.write_text("captures: {}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(tmp_path / "data", config)


def test_the_documented_example_parses(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "review-api.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "review.yaml").write_text(example)
    settings = load_settings(tmp_path, tmp_path / "review.yaml")
    capture = settings.capture
    assert capture.mode("x", "api").kind == "off" and capture.mode("x", "dicom").kind == "all"
    assert capture.mode("x", "line") == CaptureMode("sample", 0.01)
    assert capture.mode("pcb-defects", "line").kind == "failed"
    assert capture.mode("chest-xray", "line").kind == "off"
    assert settings.absolute_s == 43200


def test_a_node_series_is_captured_by_policy_as_one_case(
    models: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import io

    import pydicom

    policy = {"models": {"bright": {"dicom": "failed"}}}
    running = start_review_server(models, tmp_path_factory.mktemp("review-series"), policy)
    try:
        recorder = running.tool.recorder
        observe = recorder.series_observer()  # as the composition root wires the node

        def predict(data: bytes):
            call = running.server.plane.predict(
                "segmentation", "bright", "", ImageSource(encoded=data), PredictOptions(), None,
                "dicom",
            )  # fmt: skip
            return asyncio.run_coroutine_threadsafe(call, running.loop).result(60)

        slices = [pydicom.dcmread(io.BytesIO(ct_slice())) for _ in range(2)]
        for ds, number in zip(slices, (2, 1), strict=True):
            ds.InstanceNumber = number
        predict(WHITE)  # a failing frame served from the node is not a case by itself
        assert _cases(running) == []
        nothing = [predict(BLACK), predict(BLACK)]
        observe(slices, nothing)
        assert _cases(running) == []  # "failed": no frame failed
        observe(slices, [predict(WHITE), predict(BLACK)])
        assert _cases(running) == [("bright", "dicom")]
        with running.tool.db.connect() as conn:
            case = running.tool.store.case(conn, 1)
        assert case["image"]["frames"] == 2 and case["image"]["dtype"] == "int16"
        # the white frame was slices[0], InstanceNumber 2: the second frame of the case
        assert {f["frame"] for f in case["findings"]} == {1}
    finally:
        running.stop()
