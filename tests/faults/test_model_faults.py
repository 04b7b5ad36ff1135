"""Model faults on a real server: a missing or corrupt model file, an execution provider that
fails mid-run. The faulty model is UNAVAILABLE with its reason; every other model serves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import onnxruntime as ort
import pytest

from protos.inference import grpc_service_pb2 as kserve_pb
from protos.inference import grpc_service_pb2_grpc as kserve_grpc
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from serving.batcher import FAILURES_TO_MARK
from tests.faults.helpers import sample, segment_request, tight_repository, wrap_session
from tests.serving.conftest import ServerThread, start_server


def _copy_model(root: Path, source: str, name: str) -> Path:
    folder = root / name
    shutil.copytree(root / source, folder)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace(f"name: {source}", f"name: {name}"))
    return folder


def _states(stub) -> dict[str, pb.ModelVersionStatus]:
    listed = stub.ListModels(pb.ListModelsRequest(), timeout=60).models
    return {m.name: m.versions[0] for m in listed if m.versions}


def test_missing_and_truncated_model_files_are_unavailable_with_reason(tmp_path):
    root = tight_repository(tmp_path / "models")
    (_copy_model(root, "bright", "missing") / "1" / "model.onnx").unlink()
    truncated = _copy_model(root, "bright", "truncated") / "1" / "model.onnx"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    running = start_server(root)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            for name in ("missing", "truncated"):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Segment(segment_request(name), timeout=60)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE, name
                assert info.value.details(), name
            models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
            assert "failed to load" in models["truncated"].versions[0].reason
            reason = " ".join(v.reason for v in models["missing"].versions) or "no versions"
            assert models["missing"].versions == [] or "model.onnx" in reason
            assert stub.Segment(segment_request("bright"), timeout=60).masks
            assert stub.Segment(segment_request("tight"), timeout=60).masks
    finally:
        running.stop()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerThread]:
    running = start_server(tight_repository(tmp_path / "models"))
    yield running
    running.stop()


class FailingProvider:
    """What a failing execution provider does to session.run once `failing` is set."""

    def __init__(self) -> None:
        self.failing = False

    def __call__(self) -> None:
        if self.failing:
            raise ort.capi.onnxruntime_pybind11_state.Fail(
                "CUDA failure 700: an illegal memory access was encountered"
            )


def test_an_execution_provider_failing_mid_run_marks_the_model_not_the_server(server):
    provider = FailingProvider()
    restore = wrap_session(server, "bright", provider)
    with grpc.insecure_channel(server.address) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        kserve = kserve_grpc.GRPCInferenceServiceStub(channel)
        assert stub.Segment(segment_request("bright"), timeout=60).masks
        provider.failing = True
        for _ in range(FAILURES_TO_MARK):
            with pytest.raises(grpc.RpcError) as info:
                stub.Segment(segment_request("bright"), timeout=60)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "failed to run" in info.value.details()
            assert "CUDA" not in info.value.details()  # the runtime's text stays in the log
        # Marked: refused before any work (bytes that do not decode still get UNAVAILABLE).
        garbage = segment_request("bright", pb.ImageInput(encoded=b"not an image"))
        with pytest.raises(grpc.RpcError) as info:
            stub.Segment(garbage, timeout=60)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "marked failed" in info.value.details()
        ready = kserve.ModelReady(kserve_pb.ModelReadyRequest(name="bright"), timeout=60)
        assert not ready.ready
        assert stub.Segment(segment_request("tight"), timeout=60).masks  # the others serve
        # Once the runtime is fixed, a reload serves the model again.
        restore()
        server.call(server.server.repository.load("bright"))
        assert stub.Segment(segment_request("bright"), timeout=60).masks
    failed = sample(
        server,
        "vision_request_failures_total",
        api="segmentation",
        model="bright",
        version="1",
        error="ExecutionFailedError",
    )
    assert failed == FAILURES_TO_MARK  # the refusals of the marked model come before any work
