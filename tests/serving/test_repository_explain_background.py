"""Explain graphs load in the background after the plain model is READY (real loopback server).

Until the graph is in, `explainable` is false and Explain answers UNAVAILABLE at once with a
retry hint (never a hang) while plain Segment already serves; an explain graph that fails to
load leaves the model serving plain requests, Explain UNAVAILABLE with the file named.
"""

from __future__ import annotations

import threading

import cv2
import grpc
import numpy as np
import pytest

import serving.repository as repository_module
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.serving.conftest import start_server
from tests.serving.tiny_models import build_explainable_repository


def _image() -> pb.ImageInput:
    pixels = np.zeros((64, 64), np.uint8)
    pixels[20:40, 20:40] = 255
    return pb.ImageInput(encoded=cv2.imencode(".png", pixels)[1].tobytes())


def _explainable(stub, name: str) -> bool:
    request = pb.GetModelMetadataRequest(model=pb.ModelRef(name=name))
    return stub.GetModelMetadata(request, timeout=30).explainable


def _explain(stub, name: str):
    request = pb.ExplainRequest(model=pb.ModelRef(name=name), image=_image())
    return stub.Explain(request, timeout=20)


@pytest.fixture()
def held_explain(monkeypatch):
    """Background explain loads wait for `release.set()`."""
    release = threading.Event()
    real = repository_module._open_explainer

    def held(version):
        if not release.wait(60):
            raise TimeoutError("the test never released the explain load")
        return real(version)

    monkeypatch.setattr(repository_module, "_open_explainer", held)
    yield release
    release.set()


def test_explain_before_its_graph_is_in_is_unavailable_with_a_retry_hint(tmp_path, held_explain):
    running = start_server(build_explainable_repository(tmp_path / "models"), wait_explain=False)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            segment = pb.SegmentRequest(model=pb.ModelRef(name="bright-x"), image=_image())
            assert stub.Segment(segment, timeout=30).masks  # plain inference is READY
            assert not _explainable(stub, "bright-x")
            with pytest.raises(grpc.RpcError) as info:
                _explain(stub, "bright-x")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading" in info.value.details() and "retry" in info.value.details()
            held_explain.set()
            running.call(running.server.repository.explain_loaded())
            assert _explainable(stub, "bright-x")
            assert [h.label for h in _explain(stub, "bright-x").heatmaps] == ["bright"]
    finally:
        running.stop()


def test_an_explain_graph_that_fails_leaves_plain_inference_serving(tmp_path):
    root = build_explainable_repository(tmp_path / "models")
    (root / "bright-x" / "1" / "model.explain.onnx").write_bytes(b"not an onnx file")
    running = start_server(root)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            segment = pb.SegmentRequest(model=pb.ModelRef(name="bright-x"), image=_image())
            assert stub.Segment(segment, timeout=30).masks
            assert not _explainable(stub, "bright-x")
            with pytest.raises(grpc.RpcError) as info:
                _explain(stub, "bright-x")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            details = info.value.details()
            assert "explain graph unavailable" in details and "model.explain.onnx" in details
            assert str(tmp_path) not in details
            assert _explainable(stub, "boxes-x")  # the others' graphs are in
    finally:
        running.stop()
