"""The `Inspect` stream: over a real loopback server, and the session's window on its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc as pb_grpc
from serving.client import VisionClient
from serving.dataplane import ImageSource, Prediction
from serving.metrics import Metrics
from serving.model_info import VisionModelInfo
from serving.streaming import InspectSession, StreamFrame, StreamSettings
from tests.serving.conftest import ServerThread, start_server
from tests.serving.tiny_models import build_inspection_repository, detector_config
from vision.masks import decode_rle
from vision.types import Detection, DetectionResult, Image

PASS, FAIL = pb.VERDICT_STATUS_PASS, pb.VERDICT_STATUS_FAIL
DROPPED, ERROR = pb.VERDICT_STATUS_DROPPED, pb.VERDICT_STATUS_ERROR
TIMEOUT_S = 60.0


def _png(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


DARK = _png(np.zeros((90, 120), np.uint8))
_square = np.zeros((90, 120), np.uint8)
_square[20:50, 30:70] = 255  # rows 20..49, columns 30..69
SQUARE = _png(_square)


def _frames(images: list[bytes], start: int = 1, capture_ns: int = 0) -> Iterator[pb.Frame]:
    for offset, image in enumerate(images):
        yield VisionClient.frame(image, start + offset, capture_ns)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _settled(value: Callable[[], int], quiet_s: float = 1.0) -> int:
    """`value()` once it has not changed for `quiet_s` (proving that something stopped)."""
    end = time.monotonic() + TIMEOUT_S
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < end, "the value never settled"
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = start_server(build_inspection_repository(tmp_path_factory.mktemp("inspect")))
    yield running
    running.stop()


@pytest.fixture()
def client(server: ServerThread) -> Iterator[VisionClient]:
    with VisionClient(server.address) as c:
        yield c


def _sample(server: ServerThread, name: str, **labels: str) -> float:
    return server.server.metrics.registry.get_sample_value(name, labels) or 0.0


def _in_flight(server: ServerThread, model: str, camera: str) -> float:
    return _sample(server, "vision_stream_frames_in_flight", model=model, camera=camera)


class Gate:
    """Holds a model's inference (its batcher's run function) until `open` is set."""

    def __init__(self, server: ServerThread, model: str) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()  # a run reached the gate
        self._batcher = server.server.repository.get(model).batcher
        self._run = self._batcher._run

        def gated(feeds):
            self.entered.set()
            if not self.open.wait(TIMEOUT_S * 2):
                raise TimeoutError("the test never opened the gate")
            return self._run(feeds)

        self._batcher._run = gated

    def restore(self) -> None:
        self.open.set()
        self._batcher._run = self._run


@pytest.fixture()
def gate(server: ServerThread) -> Iterator[Gate]:
    held = Gate(server, "bright-gated")
    yield held
    held.restore()


def _stream_tasks(server: ServerThread) -> int:
    async def count() -> int:
        names = ("InspectSession", "_inspect", "_read")
        return sum(
            any(n in repr(t.get_coro()) for n in names) for t in asyncio.all_tasks() if not t.done()
        )

    return server.call(count())


# --- verdicts on the wire ------------------------------------------------------------------


def test_verdicts_come_in_order_with_findings_and_times(server, client):
    images = [DARK, SQUARE] * 5
    verdicts = list(client.inspect("bright", _frames(images), camera_id="cam-1"))
    assert [v.sequence for v in verdicts] == list(range(1, 11))
    assert [v.status for v in verdicts] == [PASS, FAIL] * 5
    for v in verdicts:
        assert (v.camera_id, v.model_name, v.model_version) == ("cam-1", "bright", "2")
        assert v.server_latency_ms > 0 and v.frame_age_ms >= v.server_latency_ms * 0.99
        assert v.timings.total_ms > 0 and not v.HasField("error")
    failed = verdicts[1]
    assert [(h.rule, h.label) for h in failed.hits] == [("any-finding", "bright")]
    assert [m.pixel_area for m in failed.masks] == [failed.hits[0].pixel_area]
    assert abs(failed.hits[0].pixel_area - 30 * 40) < 30 and failed.masks[0].png
    assert not verdicts[0].hits and not verdicts[0].masks


def test_rules_of_the_model_config_decide_and_capture_time_gives_the_age(server, client):
    captured = time.time_ns() - 2_000_000_000  # two seconds ago
    verdict = next(iter(client.inspect("boxes-rules", _frames([DARK], capture_ns=captured))))
    assert verdict.status == FAIL
    assert [(h.rule, h.label) for h in verdict.hits] == [("defect", "defect")]
    assert verdict.hits[0].score == pytest.approx(0.9)
    assert sorted(d.label for d in verdict.detections) == ["defect", "dust"]
    assert verdict.frame_age_ms >= 2000.0 > verdict.server_latency_ms


def test_segmentation_region_rule_counts_mask_pixels_inside(server, client):
    verdict = next(iter(client.inspect("bright-rules", _frames([SQUARE]), rle=True)))
    assert verdict.status == FAIL
    # ROI x < 32: columns 30 and 31 of the 30-row square
    assert [(h.rule, h.pixel_area) for h in verdict.hits] == [("edge", 60)]
    assert verdict.image_score == pytest.approx(1200 / (90 * 120), abs=0.02)
    mask = decode_rle(list(verdict.masks[0].rle.counts), 90, 120)
    assert int(mask.sum()) == verdict.masks[0].pixel_area
    assert verdict.hits[0].pixel_area == int(mask[:, :32].sum())


def test_a_malformed_frame_gets_an_error_verdict_and_the_stream_goes_on(server, client):
    bad_dtype = pb.Frame(sequence=3)
    bad_dtype.image.raw.CopyFrom(pb.RawImage(data=b"\0" * 4, shape=[2, 2]))
    too_large = VisionClient.frame(np.zeros((1500, 1500), np.uint8), 4)
    frames = [
        VisionClient.frame(SQUARE, 1),
        VisionClient.frame(b"not an image at all", 2),
        bad_dtype,
        too_large,
        VisionClient.frame(SQUARE, 4),  # does not follow 4
        VisionClient.frame(DARK, 6),
    ]
    verdicts = list(client.inspect("bright", iter(frames)))
    assert [v.status for v in verdicts] == [FAIL, ERROR, ERROR, ERROR, ERROR, PASS]
    codes = [v.error.code for v in verdicts[1:5]]
    assert codes == [
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "RESOURCE_EXHAUSTED",
        "INVALID_ARGUMENT",
    ]
    assert "sequences must increase" in verdicts[4].error.message
    assert all(v.error.message for v in verdicts[1:5])


def _raw_call(server: ServerThread, requests: list[pb.InspectRequest], metadata=()) -> list:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.VisionServiceStub(channel)
        return list(stub.Inspect(iter(requests), timeout=TIMEOUT_S, metadata=metadata))


def _config(model: str, **fields) -> pb.InspectRequest:
    return pb.InspectRequest(config=pb.StreamConfig(model=pb.ModelRef(name=model), **fields))


def _frame(image: bytes, sequence: int) -> pb.InspectRequest:
    return pb.InspectRequest(frame=VisionClient.frame(image, sequence))


@pytest.mark.parametrize(
    ("requests", "code"),
    [
        ([_frame(DARK, 1)], grpc.StatusCode.INVALID_ARGUMENT),  # no config first
        ([], grpc.StatusCode.INVALID_ARGUMENT),
        ([_config("nope"), _frame(DARK, 1)], grpc.StatusCode.NOT_FOUND),
        ([_config("no-versions"), _frame(DARK, 1)], grpc.StatusCode.UNAVAILABLE),
        ([_config("bright", max_in_flight=65)], grpc.StatusCode.INVALID_ARGUMENT),
        ([_config("")], grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_a_stream_that_cannot_start_ends_with_a_status(server, requests, code):
    with pytest.raises(grpc.RpcError) as caught:
        _raw_call(server, requests)
    assert caught.value.code() == code


def test_a_second_config_ends_the_stream_after_the_verdicts_before_it(server):
    requests = [_config("bright"), _frame(DARK, 1), _frame(SQUARE, 2), _config("bright")]
    received = []
    with grpc.insecure_channel(server.address) as channel:
        call = pb_grpc.VisionServiceStub(channel).Inspect(iter(requests), timeout=TIMEOUT_S)
        with pytest.raises(grpc.RpcError) as caught:
            for verdict in call:
                received.append(verdict.sequence)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert received == [1, 2]


# --- policies ------------------------------------------------------------------------------


def test_latest_drops_exactly_the_stale_frames(server, client):
    labels = {"model": "bright", "camera": "latest-1"}
    before = _sample(server, "vision_stream_frames_dropped_total", **labels)
    old = 60_000_000_000  # a minute, against a limit of five seconds

    def frames() -> Iterator[pb.Frame]:
        for seq in range(1, 9):
            stale = seq % 3 == 0
            captured = time.time_ns() - (old if stale else 0)
            yield VisionClient.frame(SQUARE, seq, captured)

    verdicts = list(
        client.inspect("bright", frames(), "latest-1", policy="latest", stale_after_ms=5000)
    )
    assert [v.status for v in verdicts] == [
        DROPPED if seq % 3 == 0 else FAIL for seq in range(1, 9)
    ]
    dropped = [v for v in verdicts if v.status == DROPPED]
    assert all(not v.masks and not v.hits and v.frame_age_ms >= 60_000 for v in dropped)
    after = _sample(server, "vision_stream_frames_dropped_total", **labels)
    assert after - before == 2


# Frames go stale this long after capture; the test sleeps past it once they are queued.
STALE_MS = 2000


def test_latest_drops_frames_that_went_stale_while_the_model_was_busy(server, client):
    gate = Gate(server, "bright-serial")  # one frame per run: the others wait in the queue

    def frames() -> Iterator[pb.Frame]:
        # Frame 1 carries no capture time (its age counts from arrival) and the rest are sent
        # only once it runs: a loaded machine cannot make frame 1 stale on its way in (CI once
        # dropped it there and held frame 2 instead, at 300 ms and again at 2000 ms).
        yield VisionClient.frame(SQUARE, 1, 0)
        if not gate.entered.wait(TIMEOUT_S):
            raise AssertionError("frame 1 never reached the model")
        for seq in range(2, 7):  # stamped when the client sends it
            yield VisionClient.frame(SQUARE, seq, time.time_ns())

    try:
        verdicts = client.inspect(
            "bright-serial",
            frames(),
            "latest-2",
            policy="latest",
            max_in_flight=3,
            stale_after_ms=STALE_MS,
        )
        _wait_for(lambda: _in_flight(server, "bright-serial", "latest-2") == 3, "a full window")
        queued = lambda: _sample(server, "vision_queue_depth", model="bright-serial", version="1")  # noqa: E731
        _wait_for(lambda: queued() == 2, "two frames queued behind the held run")
        time.sleep(STALE_MS / 1000 + 0.2)  # the condition is time itself: every frame is now stale
        gate.open.set()
        statuses = [v.status for v in verdicts]
    finally:
        gate.restore()
    # 1 was running; 2 and 3 went stale in the batch queue; 4..6 waited for the window.
    assert statuses == [FAIL] + [DROPPED] * 5


def test_every_pushes_back_on_a_fast_sender_and_holds_a_bounded_window(server, client, gate):
    total, window = 120, 3
    pixels = np.zeros((512, 512, 3), np.uint8)  # 768 KiB a frame
    pulled: list[int] = []

    def frames() -> Iterator[pb.Frame]:
        for seq in range(1, total + 1):
            pulled.append(seq)
            yield VisionClient.frame(pixels, seq)

    verdicts = client.inspect("bright-gated", frames(), "fast", max_in_flight=window)
    _wait_for(lambda: _in_flight(server, "bright-gated", "fast") == window, "a full window")
    sent = _settled(lambda: len(pulled))
    assert _in_flight(server, "bright-gated", "fast") == window
    # The sender is blocked: beyond the window, only what the transport buffers (flow control).
    assert sent < total and sent <= window + 32, sent
    peak = [0.0]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            peak[0] = max(peak[0], _in_flight(server, "bright-gated", "fast"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    gate.open.set()
    sequences = [v.sequence for v in verdicts]
    watching.set()
    watcher.join()
    assert sequences == list(range(1, total + 1))
    assert peak[0] <= window
    _wait_for(lambda: _in_flight(server, "bright-gated", "fast") == 0, "an empty window")


def test_a_cancelled_stream_frees_everything_and_the_server_goes_on(server, client, gate):
    def endless() -> Iterator[pb.Frame]:
        seq = 0
        while True:
            seq += 1
            yield VisionClient.frame(SQUARE, seq)

    open_streams = lambda: _sample(server, "vision_streams_open", model="bright-gated")  # noqa: E731
    call = client.inspect("bright-gated", endless(), "cancelled", max_in_flight=4)
    _wait_for(lambda: _in_flight(server, "bright-gated", "cancelled") == 4, "a full window")
    assert open_streams() == 1 and _stream_tasks(server) > 0
    call.cancel()
    _wait_for(lambda: open_streams() == 0, "the stream to close")
    _wait_for(lambda: _in_flight(server, "bright-gated", "cancelled") == 0, "frames released")
    _wait_for(lambda: _stream_tasks(server) == 0, "the stream's tasks to end")
    gate.open.set()
    verdict = next(iter(client.inspect("bright-gated", _frames([SQUARE]), "after")))
    assert verdict.status == FAIL


def test_two_cameras_share_one_model_and_each_gets_its_own_ordered_verdicts(server, gate):
    patterns = {"left": [DARK, SQUARE, SQUARE] * 4, "right": [SQUARE, DARK] * 6}
    results: dict[str, list[pb.Verdict]] = {}
    batches = lambda: _sample(server, "vision_batch_size_count", model="bright-gated", version="1")  # noqa: E731
    single = lambda: _sample(  # noqa: E731
        server, "vision_batch_size_bucket", model="bright-gated", version="1", le="1.0"
    )
    before = batches() - single()

    def run(camera: str) -> None:
        with VisionClient(server.address) as c:
            results[camera] = list(c.inspect("bright-gated", _frames(patterns[camera]), camera))

    threads = [threading.Thread(target=run, args=(camera,)) for camera in patterns]
    for thread in threads:
        thread.start()
    for camera in patterns:
        _wait_for(lambda c=camera: _in_flight(server, "bright-gated", c) == 4, f"{camera} window")
    gate.open.set()
    for thread in threads:
        thread.join(TIMEOUT_S)
    for camera, images in patterns.items():
        got = results[camera]
        assert [v.camera_id for v in got] == [camera] * len(images)
        assert [v.sequence for v in got] == list(range(1, len(images) + 1))
        assert [v.status for v in got] == [PASS if i is DARK else FAIL for i in images]
    # Frames of both streams queued behind the held run went through the batcher together.
    assert batches() - single() > before


def test_inspect_needs_the_api_key_when_one_is_set(tmp_path: Path):
    secured = start_server(build_inspection_repository(tmp_path), api_key="s3cret")
    try:
        requests = [_config("bright"), _frame(SQUARE, 1)]
        with pytest.raises(grpc.RpcError) as caught:
            _raw_call(secured, requests)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with VisionClient(secured.address, api_key="s3cret") as keyed:
            assert [v.status for v in keyed.inspect("bright", _frames([SQUARE]))] == [FAIL]
    finally:
        secured.stop()


# --- the session's window, exactly ---------------------------------------------------------


async def _bounded(coroutine) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        await coroutine


class HeldPlane:
    """The parts of a DataPlane a session uses; predictions wait until `gate` is set."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.config = detector_config("boxes")

    def model_info(self, name: str, version: str = "") -> VisionModelInfo:
        return VisionModelInfo(name, "1", self.config, ("cpu",), False)

    async def predict(self, task, name, version, image, options, deadline, origin) -> Prediction:
        assert (task, origin) == ("detection", "stream") and isinstance(image, ImageSource)
        self.waiting += 1
        await self.gate.wait()
        box = Detection(1, 1, 9, 9, score=0.9, class_id=0, label="defect")
        pixels = np.zeros((10, 10, 3), np.uint8)
        return Prediction(name, "1", Image(pixels), DetectionResult([box]), {"total_ms": 1.0})

    async def run_in_worker(self, function, *args):
        return function(*args)

    run_post = run_in_worker  # the postprocessing pool, the same here


def test_the_session_never_takes_more_frames_than_its_window():
    async def scenario() -> None:
        plane = HeldPlane()
        session = InspectSession.open(plane, StreamSettings("boxes", max_in_flight=3))
        pulled = 0

        async def frames():
            nonlocal pulled
            for seq in range(1, 41):
                pulled += 1
                yield StreamFrame(seq, image=ImageSource(encoded=b"png"))

        verdicts = session.verdicts(frames())
        first = asyncio.create_task(verdicts.__anext__())
        while plane.waiting < 3:
            await asyncio.sleep(0)
        for _ in range(50):  # give the reader every chance to take a fourth frame
            await asyncio.sleep(0)
        assert (pulled, session.in_flight) == (3, 3)
        plane.gate.set()
        got = [await first] + [v async for v in verdicts]
        assert [v.sequence for v in got] == list(range(1, 41))
        assert {v.status for v in got} == {"fail"}
        assert (session.peak_in_flight, session.in_flight) == (3, 0)

    asyncio.run(_bounded(scenario()))


def test_a_consumer_that_stops_cancels_every_frame_task():
    async def scenario() -> None:
        plane = HeldPlane()
        session = InspectSession.open(plane, StreamSettings("boxes", max_in_flight=5))

        async def frames():
            seq = 0
            while True:
                seq += 1
                yield StreamFrame(seq, image=ImageSource(encoded=b"png"))

        consumer = asyncio.create_task(session.verdicts(frames()).__anext__())
        while plane.waiting < 5:
            await asyncio.sleep(0)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert session.in_flight == 0
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []
        gauge = plane.metrics.registry.get_sample_value(
            "vision_stream_frames_in_flight", {"model": "boxes", "camera": ""}
        )
        assert gauge == 0.0

    asyncio.run(_bounded(scenario()))
