"""The line client's parts without a server: the frame buffer, back-off, records."""

from __future__ import annotations

import threading

import numpy as np

from line.backoff import Backoff
from line.reader import Captured, FrameBuffer
from line.records import verdict_record
from line.wire import encode_image
from protos.vision.v1 import vision_pb2 as pb


def frame(i: int) -> Captured:
    return Captured(np.full((4, 4, 3), i, np.uint8), capture_ns=i)


def test_latest_keeps_only_the_newest_frame() -> None:
    buffer = FrameBuffer(1, replace=True, stop=threading.Event())
    for i in range(5):
        buffer.put(frame(i))
    assert buffer.get(0).capture_ns == 4
    assert buffer.get(0) is None
    assert buffer.replaced == 4


def test_every_waits_for_room_and_ends_with_eof() -> None:
    buffer = FrameBuffer(2, replace=False, stop=threading.Event())
    buffer.put(frame(0))
    buffer.put(frame(1))
    writer = threading.Thread(target=buffer.put, args=(frame(2),))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive()  # full: the reader waits, nothing is dropped
    assert buffer.get(0).capture_ns == 0
    writer.join(5)
    assert [buffer.get(0).capture_ns for _ in range(2)] == [1, 2]
    buffer.close()
    try:
        buffer.get(0)
    except EOFError:
        return
    raise AssertionError("a closed, empty buffer raises EOFError")


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, cap_s=4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_record_of_a_failing_detection() -> None:
    verdict = pb.Verdict(
        camera_id="c1",
        sequence=7,
        status=pb.VERDICT_STATUS_FAIL,
        hits=[pb.RuleHit(rule="any", label="short", score=0.9)],
        detections=[pb.Detection(box=pb.Box(x1=1, y1=2, x2=3, y2=4), score=0.9, label="short")],
        model_name="pcb",
        model_version="1",
        frame_age_ms=12.5,
    )
    record = verdict_record(verdict, capture_ns=1_000_000, received_ns=21_000_000)
    assert record["status"] == "FAIL" and record["latency_ms"] == 20.0
    assert record["findings"]["detections"] == [
        {"label": "short", "score": 0.9, "box": [1, 2, 3, 4]}
    ]
    assert "error" not in record and "image_score" not in record["findings"]


def test_raw_frames_are_rgb() -> None:
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    image = encode_image(bgr, "raw")
    pixels = np.frombuffer(image.raw.data, np.uint8).reshape(image.raw.shape)
    assert list(image.raw.shape) == [2, 3, 3] and pixels[0, 0].tolist() == [0, 0, 255]
