"""A client that never reads its Inspect stream: the server holds a bounded window, reads no
more frames, and after the stall timeout ends the stream and releases everything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from serving.client import VisionClient
from serving.rpc import inspect_servicer
from tests.faults.helpers import sample, tight_repository, wait_for
from tests.serving.conftest import ServerThread, start_server

WINDOW = 3
STALL_S = 2.0


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    monkeypatch.setattr(inspect_servicer, "STALL_TIMEOUT_S", STALL_S)
    running = start_server(tight_repository(tmp_path / "models"))
    yield running
    running.stop()


def _stream_tasks(server: ServerThread) -> int:
    import asyncio

    async def count() -> int:
        names = ("InspectSession", "_inspect", "_read")
        return sum(
            1
            for task in asyncio.all_tasks()
            if any(name in repr(task.get_coro()) for name in names)
        )

    return server.call(count())


def test_a_client_that_never_reads_is_bounded_then_cut_off(server):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)  # masks that compress badly
    pulled: list[int] = []
    config = pb.StreamConfig(model=pb.ModelRef(name="bright"), max_in_flight=WINDOW)

    def requests() -> Iterator[pb.InspectRequest]:
        yield pb.InspectRequest(config=config)
        for sequence in range(1, 10_000):
            pulled.append(sequence)
            yield pb.InspectRequest(frame=VisionClient.frame(noise, sequence))

    options = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        verdicts = stub.Inspect(requests())  # not read until the server has given up on it
        wait_for(lambda: sample(server, "vision_streams_open", model="bright") == 1, "the stream")
        wait_for(lambda: len(pulled) > WINDOW, "frames sent")
        # Stalled: the server stops reading frames, and after the stall timeout lets go of the
        # stream's session (its window of frames, its tasks) though the client still holds it.
        wait_for(
            lambda: sample(server, "vision_streams_open", model="bright") == 0,
            "the server ending the stalled stream",
        )
        held = len(pulled)
        read = 0
        with pytest.raises(grpc.RpcError) as info:
            for _ in verdicts:  # what the transport had buffered, then the status
                read += 1
    assert info.value.code() in {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
    assert read < held, (read, held)
    assert held < 200, f"{held} frames were taken from a client that read nothing"
    wait_for(lambda: _stream_tasks(server) == 0, "every stream task gone")
    assert sample(server, "vision_stream_frames_in_flight", model="bright", camera="") == 0
