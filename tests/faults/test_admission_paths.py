"""Admission on the paths that were not gated before: KServe REST refuses before reading or
decoding the body, SegmentVolume is admitted before its series is assembled (one ticket per
volume holding the places of its windows in flight), and a volume waiting for its places is
not overtaken by single images."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2_grpc
from serving.admission import Admission
from serving.client import VisionClient
from tests.faults.helpers import (
    HeldRuns,
    admitted,
    sample,
    segment_request,
    tight_repository,
    wait_for,
)
from tests.serving.conftest import ServerThread, start_server
from tests.serving.tiny_models import build_volume_repository, volume_config
from vision.config import BatchingSpec

TIGHT_TICKETS = 3  # max_queue_size 2 + max_batch_size 1
NOT_JSON = b'{"inputs": [this is not JSON'


@pytest.fixture()
def tight(tmp_path: Path) -> Iterator[ServerThread]:
    running = start_server(tight_repository(tmp_path / "models"), http_port=0)
    yield running
    running.stop()


def _post(url: str, body: bytes) -> tuple[int, str]:
    """The status and the Retry-After header ("" when absent)."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers.get("Retry-After", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After", "")


def _post_expecting_continue(port: int, path: str, body: bytes) -> tuple[str, bool]:
    """POST with `Expect: 100-continue`; the final status, and whether the body was sent."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode())
        status = sock.recv(65536).split(b" ", 2)[1].decode()
        if status != "100":
            return status, False
        sock.sendall(body)
        return sock.recv(65536).split(b" ", 2)[1].decode(), True


def test_kserve_rest_is_refused_before_its_body_is_read_or_decoded(tight):
    port = tight.server.http_port
    path = "/v2/models/tight/infer"
    url = f"http://127.0.0.1:{port}{path}"
    held = HeldRuns(tight, "tight")
    try:
        with (
            grpc.insecure_channel(tight.address) as channel,
            concurrent.futures.ThreadPoolExecutor(TIGHT_TICKETS) as pool,
        ):
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            calls = [
                pool.submit(stub.Segment, segment_request("tight"), timeout=60)
                for _ in range(TIGHT_TICKETS)
            ]
            wait_for(lambda: admitted(tight, "tight") == TIGHT_TICKETS, "a full gate")
            # A body that is not JSON: refused for capacity, so it was never decoded.
            status, retry_after = _post(url, NOT_JSON)
            assert (status, retry_after.isdigit()) == (429, True)
            # A client that waits for 100 Continue is refused without sending its body.
            assert _post_expecting_continue(port, path, NOT_JSON * 1000) == ("429", False)
            held.release()
            assert all(call.result(timeout=60).masks for call in calls)
    finally:
        held.release()
    wait_for(lambda: admitted(tight, "tight") == 0, "every ticket back")
    # Admitted now: the same body is read and decoded, and refused for what it is.
    assert _post(url, NOT_JSON)[0] == 400
    assert _post_expecting_continue(port, path, NOT_JSON) == ("400", True)
    refused = sample(
        tight,
        "vision_request_failures_total",
        api="infer",
        model="tight",
        version="1",
        error="OverloadedError",
    )
    assert refused == 2


VOLUME = "tiny-volume"
VOLUME_PLACES = 4  # windows in flight: min(2 x max_batch_size, max_queue_size // 2)


@pytest.fixture()
def volume_server(tmp_path: Path) -> Iterator[ServerThread]:
    # 10 places (8 queued + 2 per batch); a volume holds 4: two fit, a third does not.
    config = dataclasses.replace(volume_config(VOLUME), batching=BatchingSpec(2, 2.0, 8))
    running = start_server(build_volume_repository(tmp_path / "models", config))
    yield running
    running.stop()


def test_segment_volume_is_admitted_before_assembly_and_shed_at_capacity(volume_server):
    voxels = np.zeros((24, 40, 36), np.float32)
    voxels[8:16, 10:30, 10:26] = 1.0
    volume = (voxels, (2.0, 1.0, 1.0))
    held = HeldRuns(volume_server, VOLUME)
    try:
        with (
            VisionClient(volume_server.address) as client,
            concurrent.futures.ThreadPoolExecutor(2) as pool,
        ):
            calls = [pool.submit(client.segment_volume, VOLUME, volume) for _ in range(2)]
            wait_for(lambda: admitted(volume_server, VOLUME) == 2 * VOLUME_PLACES, "two volumes in")
            # Bytes that are no DICOM: refused for capacity, so the series was never read.
            with pytest.raises(grpc.RpcError) as info:
                client.segment_volume(VOLUME, [b"not a DICOM file"])
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry after" in info.value.details()
            trailers = dict(info.value.trailing_metadata() or ())
            assert trailers.get("grpc-retry-pushback-ms", "").isdigit()
            held.release()
            assert all(call.result(timeout=60).masks for call in calls)
        wait_for(lambda: admitted(volume_server, VOLUME) == 0, "every place back")
        with VisionClient(volume_server.address) as client:
            assert client.segment_volume(VOLUME, volume).masks  # recovered at once
            with pytest.raises(grpc.RpcError) as info:
                client.segment_volume(VOLUME, [b"not a DICOM file"])
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # read, once admitted
    finally:
        held.release()


def _model(name: str, batch: int, queue: int) -> SimpleNamespace:
    """What the gate reads of a model version: its name, batching and batcher estimates."""
    batcher = SimpleNamespace(depth=0, compute_estimate_s=0.0, row_compute_estimate_s=0.0)
    config = SimpleNamespace(batching=BatchingSpec(batch, 0.0, queue))
    return SimpleNamespace(name=name, config=config, batcher=batcher)


def test_a_volume_waiting_for_its_places_is_not_overtaken_by_single_requests():
    async def scenario() -> list[str]:
        admission = Admission()
        model = _model("m", batch=2, queue=4)  # 6 places
        order: list[str] = []
        held = asyncio.Event()

        async def request(name: str, places: int) -> None:
            async with admission.ticket(model, None, shed=False, places=places):
                order.append(name)
                await held.wait()

        first = [asyncio.create_task(request(f"image{i}", 1)) for i in range(5)]
        await asyncio.sleep(0)
        volume = asyncio.create_task(request("volume", 4))  # 1 place free: it waits
        await asyncio.sleep(0)
        late = asyncio.create_task(request("late image", 1))  # would fit, but queues behind
        await asyncio.sleep(0)
        with pytest.raises(Exception, match="at capacity"):
            async with admission.ticket(model, None, shed=True):
                pass  # a shed request does not jump the queue either
        held.set()
        await asyncio.gather(*first, volume, late)
        assert admission.snapshot() == {"m": 0}
        return order

    order = asyncio.run(scenario())
    assert order[:5] == [f"image{i}" for i in range(5)]
    assert order[5:] == ["volume", "late image"]
