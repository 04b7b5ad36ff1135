"""`--grpc-max-concurrent-rpcs` on a real loopback server: beyond the limit a call is refused
RESOURCE_EXHAUSTED by gRPC itself, before its message is read, and the calls in flight finish."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import grpc

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.faults.helpers import HeldRuns, admitted, segment_request, tight_repository, wait_for
from tests.serving.conftest import start_server

LIMIT = 3  # the tight model's tickets: the held calls fill both


def _served(stub: vision_pb2_grpc.VisionServiceStub) -> bool:
    try:
        return bool(stub.Segment(segment_request("bright"), timeout=60).masks)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False


def test_calls_beyond_the_limit_are_refused_before_they_are_read(tmp_path: Path):
    running = start_server(tight_repository(tmp_path / "models"), grpc_max_concurrent_rpcs=LIMIT)
    held = HeldRuns(running, "tight")
    try:
        with (
            grpc.insecure_channel(running.address) as channel,
            concurrent.futures.ThreadPoolExecutor(LIMIT) as pool,
        ):
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            calls = [
                pool.submit(stub.Segment, segment_request("tight"), timeout=60)
                for _ in range(LIMIT)
            ]
            wait_for(lambda: admitted(running, "tight") == LIMIT, "the limit in flight")
            # Another model, and bytes no handler could parse: refused before either mattered.
            garbage = segment_request("bright", pb.ImageInput(encoded=b"not an image"))
            try:
                stub.Segment(garbage, timeout=60)
                raise AssertionError("a call beyond the limit was served")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            held.release()
            assert all(call.result(timeout=60).masks for call in calls)
        wait_for(lambda: admitted(running, "tight") == 0, "every call finished")
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            # The limiter counts a call until its task has sent the status, a moment after the
            # client read it: the first calls after may still be refused, then it serves.
            wait_for(lambda: _served(stub), "a call served below the limit")
    finally:
        held.release()
        running.stop()
