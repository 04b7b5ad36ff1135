"""Overload on a real loopback server: admission refuses before decoding, per model, and lets
go the moment load drops; cancelled and expired calls are counted."""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos.inference import grpc_service_pb2 as kserve_pb
from protos.inference import grpc_service_pb2_grpc as kserve_grpc
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.faults.helpers import (
    HeldRuns,
    admitted,
    sample,
    segment_request,
    tight_repository,
    wait_for,
    wrap_session,
)
from tests.serving.conftest import ServerThread, start_server

TIGHT_TICKETS = 3  # max_queue_size 2 + max_batch_size 1


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerThread]:
    running = start_server(tight_repository(tmp_path / "models"))
    yield running
    running.stop()


@pytest.fixture()
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def _infer_request(model: str) -> kserve_pb.ModelInferRequest:
    tensor = kserve_pb.ModelInferRequest.InferInputTensor(
        name="images", datatype="FP32", shape=[1, 3, 64, 64]
    )
    raw = np.zeros((1, 3, 64, 64), np.float32).tobytes()
    return kserve_pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[raw])


def test_over_the_bound_is_refused_before_decoding_and_recovers_at_once(server, channel):
    stub = vision_pb2_grpc.VisionServiceStub(channel)
    held = HeldRuns(server, "tight")
    try:
        with concurrent.futures.ThreadPoolExecutor(TIGHT_TICKETS) as pool:
            calls = [
                pool.submit(stub.Segment, segment_request("tight"), timeout=60)
                for _ in range(TIGHT_TICKETS)
            ]
            wait_for(lambda: admitted(server, "tight") == TIGHT_TICKETS, "a full gate")
            # Bytes that cannot be decoded: refused for capacity, so decoding never ran.
            garbage = segment_request("tight", pb.ImageInput(encoded=b"not an image at all"))
            with pytest.raises(grpc.RpcError) as info:
                stub.Segment(garbage, timeout=60)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry after" in info.value.details()
            kserve = kserve_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                kserve.ModelInfer(_infer_request("tight"), timeout=60)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The gate is per model: another model serves meanwhile.
            assert stub.Segment(segment_request("bright"), timeout=60).masks
            held.release()
            assert all(call.result(timeout=60).masks for call in calls)
    finally:
        held.release()
    wait_for(lambda: admitted(server, "tight") == 0, "every ticket back")
    assert stub.Segment(segment_request("tight"), timeout=60).masks  # recovered at once
    refused = sample(
        server,
        "vision_request_failures_total",
        api="segmentation",
        model="tight",
        version="1",
        error="OverloadedError",
    )
    assert refused == 1


def test_a_deadline_that_cannot_be_met_is_refused_before_any_work(server, channel):
    stub = vision_pb2_grpc.VisionServiceStub(channel)
    restore = wrap_session(server, "tight", lambda: time.sleep(1.0))  # a slow model: 1 s a run
    try:
        assert stub.Segment(segment_request("tight"), timeout=60).masks  # measured once
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            calls = [
                pool.submit(stub.Segment, segment_request("tight"), timeout=60) for _ in range(2)
            ]
            wait_for(lambda: admitted(server, "tight") == 2, "two requests ahead")
            # One runs, one waits: an answer needs about 3 s; this call allows 1.5 s.
            with pytest.raises(grpc.RpcError) as info:
                stub.Segment(segment_request("tight"), timeout=1.5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "deadline leaves" in info.value.details()
            assert all(call.result(timeout=60).masks for call in calls)
    finally:
        restore()


def test_cancelled_and_expired_calls_are_counted_with_their_reason(server, channel):
    stub = vision_pb2_grpc.VisionServiceStub(channel)
    labels = {"api": "segmentation", "model": "tight", "version": "1"}
    held = HeldRuns(server, "tight")
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.Segment(segment_request("tight"), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for(
            lambda: (
                sample(server, "vision_requests_abandoned_total", **labels, reason="deadline") == 1
            ),
            "the expired call counted",
        )
        call = stub.Segment.future(segment_request("tight"), timeout=60)
        wait_for(lambda: admitted(server, "tight") >= 1, "the call admitted")
        call.cancel()
        wait_for(
            lambda: (
                sample(server, "vision_requests_abandoned_total", **labels, reason="cancelled") == 1
            ),
            "the cancelled call counted",
        )
    finally:
        held.release()
    wait_for(lambda: admitted(server, "tight") == 0, "every ticket back")


def test_kserve_rest_is_refused_with_429_when_the_model_is_at_capacity(tmp_path: Path):
    running = start_server(tight_repository(tmp_path / "models"), http_port=0)
    held = HeldRuns(running, "tight")
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "FP32",
                    "shape": [1, 3, 64, 64],
                    "data": [0.0] * (3 * 64 * 64),
                }
            ]
        }  # fmt: skip
    ).encode()
    url = f"http://127.0.0.1:{running.server.http_port}/v2/models/tight/infer"

    def post() -> int:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        with concurrent.futures.ThreadPoolExecutor(TIGHT_TICKETS) as pool:
            calls = [pool.submit(post) for _ in range(TIGHT_TICKETS)]
            wait_for(lambda: admitted(running, "tight") == TIGHT_TICKETS, "a full gate")
            assert post() == 429
            held.release()
            assert [call.result(timeout=60) for call in calls] == [200] * TIGHT_TICKETS
        assert post() == 200
    finally:
        held.release()
        running.stop()
