"""The drain on stop, observed on a real server: admitted requests finish, new ones are refused
UNAVAILABLE at once, and past the drain timeout the admitted ones get a clean UNAVAILABLE."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import grpc
import pytest

from protos.vision.v1 import vision_pb2_grpc
from tests.faults.helpers import HeldRuns, admitted, segment_request, tight_repository, wait_for
from tests.serving.conftest import start_server


def _stop_in_background(running) -> threading.Thread:
    thread = threading.Thread(target=running.stop, daemon=True)
    thread.start()
    return thread


def _wait_for_admission(running, calls: list[concurrent.futures.Future]) -> None:
    """Wait until all `calls` hold a ticket; a call that ended first fails with its own error
    (a loaded run once timed out here with no sign of why)."""
    wait_for(
        lambda: admitted(running, "tight") == len(calls) or any(call.done() for call in calls),
        "three admitted requests",
    )
    for call in calls:
        if call.done():
            raise AssertionError(f"a held call ended before the drain: {call.exception()!r}")


def test_stop_finishes_admitted_requests_and_refuses_new_ones(tmp_path: Path):
    running = start_server(tight_repository(tmp_path / "models"), drain_timeout_s=60.0)
    held = HeldRuns(running, "tight")
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                calls = [
                    pool.submit(stub.Segment, segment_request("tight"), timeout=120)
                    for _ in range(3)
                ]
                _wait_for_admission(running, calls)
                stopping = _stop_in_background(running)
                wait_for(lambda: running.server.plane.admission._closing, "the drain")
                with pytest.raises(grpc.RpcError) as info:
                    stub.Segment(segment_request("bright"), timeout=120)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in info.value.details()
                held.release()
                assert all(call.result(timeout=120).masks for call in calls)
        stopping.join(120)
        assert not stopping.is_alive()
    finally:
        held.release()


def test_past_the_drain_timeout_admitted_requests_get_unavailable(tmp_path: Path):
    running = start_server(tight_repository(tmp_path / "models"), drain_timeout_s=1.0)
    held = HeldRuns(running, "tight")
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                calls = [
                    pool.submit(stub.Segment, segment_request("tight"), timeout=120)
                    for _ in range(3)
                ]
                _wait_for_admission(running, calls)
                stopping = _stop_in_background(running)
                codes = []
                for call in calls:
                    with pytest.raises(grpc.RpcError) as info:
                        call.result(timeout=120)
                    codes.append(info.value.code())
        assert codes == [grpc.StatusCode.UNAVAILABLE] * 3, codes
    finally:
        held.release()
    stopping.join(120)
    assert not stopping.is_alive()
