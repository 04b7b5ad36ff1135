"""Readiness and versions through a real loopback server: 'serving what it can'.

A broken model makes that model not ready, never the server (KServe ServerReady, HTTP
/v2/health/ready); a version that fails to load leaves the last good one serving and the model
status says which version failed and why, naming files but never server paths.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from protos.inference import grpc_service_pb2 as kserve_pb
from protos.inference import grpc_service_pb2_grpc as kserve_grpc
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from serving.repository import public_reason
from tests.serving.conftest import start_server
from tests.serving.tiny_models import build_repository

CORRUPT = b"this is not an onnx file"


def _image() -> pb.ImageInput:
    pixels = np.zeros((64, 64), np.uint8)
    pixels[10:30, 10:30] = 255
    return pb.ImageInput(encoded=cv2.imencode(".png", pixels)[1].tobytes())


def _segment(stub, name: str, version: str = ""):
    request = pb.SegmentRequest(model=pb.ModelRef(name=name, version=version), image=_image())
    return stub.Segment(request, timeout=30)


def _statuses(stub, name: str) -> dict[str, pb.ModelVersionStatus]:
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    return {v.version: v for v in models[name].versions}


def _http_ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code


def _copy_model(repo: Path, source: str, name: str, versions: tuple[str, ...]) -> Path:
    folder = repo / name
    folder.mkdir()
    text = (repo / source / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text.replace(f"name: {source}", f"name: {name}"))
    for version in versions:
        shutil.copytree(repo / source / version, folder / version)
    return folder


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return build_repository(tmp_path / "models")


def test_broken_model_is_not_ready_but_the_server_is(repo):
    broken = _copy_model(repo, "bright", "broken", ("1",))
    (broken / "1" / "model.onnx").write_bytes(CORRUPT)
    running = start_server(repo, http_port=0)
    try:
        with grpc.insecure_channel(running.address) as channel:
            kserve = kserve_grpc.GRPCInferenceServiceStub(channel)
            assert kserve.ServerReady(kserve_pb.ServerReadyRequest(), timeout=30).ready
            ready = kserve.ModelReady(kserve_pb.ModelReadyRequest(name="broken"), timeout=30)
            assert not ready.ready
            assert kserve.ModelReady(kserve_pb.ModelReadyRequest(name="bright"), timeout=30).ready
            status = _statuses(vision_pb2_grpc.VisionServiceStub(channel), "broken")[""]
        assert status.state == pb.MODEL_STATE_UNAVAILABLE
        assert "model.onnx" in status.reason and "broken/1/model.onnx" in status.reason
        assert str(repo) not in status.reason and str(repo.resolve()) not in status.reason
        assert _http_ready(running.server.http_port) == 200
    finally:
        running.stop()


def test_a_version_that_fails_leaves_the_last_good_one_serving(repo):
    model = _copy_model(repo, "bright", "rolling", ("1",))
    running = start_server(repo)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            assert _segment(stub, "rolling").model_version == "1"
            (model / "2").mkdir()
            (model / "2" / "model.onnx").write_bytes(CORRUPT)
            with pytest.raises(Exception, match="version 2"):
                running.call(running.server.repository.load("rolling"))
            assert _segment(stub, "rolling").model_version == "1"  # still serving
            statuses = _statuses(stub, "rolling")
            assert statuses["1"].state == pb.MODEL_STATE_READY
            assert statuses["2"].state == pb.MODEL_STATE_UNAVAILABLE
            assert "rolling/2/model.onnx" in statuses["2"].reason
            assert "still serving 1" in statuses["2"].reason
            assert str(repo) not in statuses["2"].reason
            with pytest.raises(grpc.RpcError) as info:
                _segment(stub, "rolling", version="2")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "version 2 failed to load" in info.value.details()
            # A good version 2 serves beside version 1 (policy: latest 2) on the next load.
            shutil.copy(repo / "bright" / "2" / "model.onnx", model / "2" / "model.onnx")
            running.call(running.server.repository.load("rolling"))
            assert _segment(stub, "rolling").model_version == "2"
            states = {v: s.state for v, s in _statuses(stub, "rolling").items()}
            assert states == {"1": pb.MODEL_STATE_READY, "2": pb.MODEL_STATE_READY}
    finally:
        running.stop()


def test_a_broken_config_on_reload_keeps_the_versions_serving(repo):
    running = start_server(repo)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            (repo / "boxes" / "config.yaml").write_text("task: [not, a, config")
            with pytest.raises(Exception, match="boxes"):
                running.call(running.server.repository.load("boxes"))
            kserve = kserve_grpc.GRPCInferenceServiceStub(channel)
            assert kserve.ModelReady(kserve_pb.ModelReadyRequest(name="boxes"), timeout=30).ready
            statuses = _statuses(stub, "boxes")
            assert statuses["1"].state == pb.MODEL_STATE_READY
            assert statuses[""].state == pb.MODEL_STATE_UNAVAILABLE
            assert str(repo) not in statuses[""].reason
    finally:
        running.stop()


def test_public_reason_keeps_model_and_file_names_only(tmp_path):
    root = tmp_path / "models"
    text = f"Load model from {root}/seg/3/model.onnx failed; see /opt/secret/place/x.log"
    reason = public_reason(text, root)
    assert reason == "Load model from seg/3/model.onnx failed; see x.log"
