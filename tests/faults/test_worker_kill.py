"""SIGKILL of one `vision serve --workers 2` worker under load: its calls in flight end
UNAVAILABLE (retryable), never hang or INTERNAL; the other worker and the replacement serve."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest

from protos.vision.v1 import vision_pb2_grpc
from tests.faults.helpers import segment_request, tight_repository, wait_for

workers = pytest.importorskip(
    "tests.serving.test_workers", reason="vision serve --workers is not in this tree"
)


def _load(address: str, stop: threading.Event, codes: Counter, lock: threading.Lock) -> None:
    """One connection's callers: Segment after Segment until `stop`; counts every status."""
    with grpc.insecure_channel(address) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        while not stop.is_set():
            try:
                stub.Segment(segment_request("bright"), timeout=60)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            with lock:
                codes[code] += 1


def test_sigkill_of_a_worker_under_load_loses_nothing_silently(tmp_path: Path):
    repository = tight_repository(tmp_path / "models")
    running = workers._start(repository, tmp_path, count=2)
    stop, lock, codes = threading.Event(), threading.Lock(), Counter()
    threads = [
        threading.Thread(target=_load, args=(running.address, stop, codes, lock)) for _ in range(4)
    ]
    try:
        first = running.wait_listening(2)
        for thread in threads:
            thread.start()
        wait_for(lambda: codes["OK"] >= 20, "load on both workers", 120)
        os.kill(sorted(first)[0], signal.SIGKILL)
        replaced = running.wait_listening(2, exclude={sorted(first)[0]})
        assert len(replaced) == 2
        served_before = codes["OK"]
        wait_for(lambda: codes["OK"] >= served_before + 20, "serving after the kill", 120)
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
        code = workers._stop(running)
    assert code == 0, running.tail()
    # The killed worker's calls in flight: UNAVAILABLE (the connection reset), retryable.
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
