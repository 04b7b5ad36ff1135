"""Batching seen from a client: mixed image sizes, a full queue, a deadline in the queue."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.serving.conftest import start_server
from tests.serving.tiny_models import build_repository
from vision.masks import decode_png


def _request(height: int, width: int) -> pb.SegmentRequest:
    pixels = np.zeros((height, width), np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 255
    image = pb.ImageInput(encoded=cv2.imencode(".png", pixels)[1].tobytes())
    return pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=image)


class Gate:
    """Wraps a batcher's model run so the test decides when batches may run."""

    def __init__(self, batcher) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self._run = batcher._run
        batcher._run = self

    def __call__(self, feeds):
        self.entered.set()
        self.open.wait(30)
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self._run(feeds)


@pytest.fixture()
def gated(tmp_path: Path):
    repo = build_repository(tmp_path / "models")
    config = repo / "bright" / "config.yaml"
    config.write_text(config.read_text().replace("max_queue_size: 128", "max_queue_size: 2"))
    running = start_server(repo)
    version = running.server.repository.get("bright")
    gate = Gate(version.batcher)
    channel = grpc.insecure_channel(running.address)
    yield vision_pb2_grpc.VisionServiceStub(channel), gate, version.batcher
    gate.open.set()
    channel.close()
    running.stop()


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_images_of_different_sizes_batch_together(gated):
    stub, gate, batcher = gated
    sizes = [(64, 64), (90, 120), (300, 200)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(stub.Segment, _request(*sizes[0]), timeout=30)
        gate.entered.wait(10)
        rest = [pool.submit(stub.Segment, _request(*s), timeout=30) for s in sizes[1:]]
        _wait_for(lambda: batcher.depth == 2)
        gate.open.set()
        responses = [first.result(), *(f.result() for f in rest)]
    assert gate.batches == [1, 2]  # the two queued images, of different sizes, ran as one batch
    for (height, width), response in zip(sizes, responses, strict=True):
        mask = decode_png(response.masks[0].png)
        assert mask.shape == (height, width)
        assert mask[height // 4 + 2, width // 4 + 2] and not mask[-1, -1]


def test_full_queue_answers_resource_exhausted_at_once(gated):
    stub, gate, batcher = gated
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = pool.submit(stub.Segment, _request(64, 64), timeout=30)
        gate.entered.wait(10)
        queued = [pool.submit(stub.Segment, _request(64, 64), timeout=30) for _ in range(2)]
        _wait_for(lambda: batcher.depth == 2)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Segment(_request(64, 64), timeout=30)
        assert time.monotonic() - started < 2.0
        gate.open.set()
        assert running.result().masks and all(f.result().masks for f in queued)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in info.value.details()  # refused at admission, before decoding


def test_request_whose_deadline_passes_in_the_queue_never_runs(gated):
    stub, gate, batcher = gated
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(stub.Segment, _request(64, 64), timeout=30)
        gate.entered.wait(10)
        with pytest.raises(grpc.RpcError) as info:
            stub.Segment(_request(64, 64), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        gate.open.set()
        running.result()
    _wait_for(lambda: batcher.depth == 0)
    time.sleep(0.1)
    assert gate.batches == [1]  # the expired request was dropped, not run
