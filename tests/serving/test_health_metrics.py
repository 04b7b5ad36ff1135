"""Standard gRPC health (per model), server reflection and Prometheus metrics."""

from __future__ import annotations

import socket
import urllib.request

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.serving.conftest import start_server


def test_health_overall_and_per_model(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == serving
    assert stub.Check(health_pb2.HealthCheckRequest(service="bright")).status == serving
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="no-such-model"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_both_apis(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert {
        "vision.v1.VisionService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    } <= names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_metrics_per_model(repository):
    port = _free_port()
    running = start_server(repository, http_port=port)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            ok, png = cv2.imencode(".png", np.zeros((32, 32), np.uint8))
            image = pb.ImageInput(encoded=png.tobytes())
            stub.Segment(pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=image))
            with pytest.raises(grpc.RpcError):
                stub.Segment(
                    pb.SegmentRequest(
                        model=pb.ModelRef(name="bright"), image=pb.ImageInput(encoded=b"junk")
                    )
                )
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
    finally:
        running.stop()
    assert (
        'vision_requests_total{api="segmentation",model="bright",outcome="ok",version="2"}' in text
    )
    assert 'vision_batch_size_count{model="bright",version="2"}' in text
    assert 'vision_queue_depth{model="bright",version="2"}' in text
    assert "vision_compute_latency_seconds_bucket" in text
