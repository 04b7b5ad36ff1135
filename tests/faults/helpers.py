"""What the fault tests share: small repositories, a held or slowed model run, waiting on state.

Faults are injected at the runtime's boundary (the ONNX Runtime session a model version holds),
never by replacing the serving code under test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from protos.vision.v1 import vision_pb2 as pb
from tests.serving.conftest import ServerThread
from tests.serving.tiny_models import brightness_segmenter, segmenter_config, write_config

TIMEOUT_S = 60.0


def tight_repository(root: Path) -> Path:
    """`tight` (one row per batch, two queued: 3 admission tickets) and `bright` (the default
    batching), both brightness segmenters."""
    tight = segmenter_config("tight", max_batch_size=1, max_queue_size=2)
    write_config(tight, root / "tight")
    brightness_segmenter(root / "tight" / "1" / "model.onnx")
    bright = segmenter_config("bright")
    write_config(bright, root / "bright")
    brightness_segmenter(root / "bright" / "1" / "model.onnx")
    return root


def png(size: int = 64) -> pb.ImageInput:
    """A grey PNG with a bright square."""
    pixels = np.zeros((size, size), np.uint8)
    pixels[size // 4 : size // 2, size // 4 : size // 2] = 255
    return pb.ImageInput(encoded=cv2.imencode(".png", pixels)[1].tobytes())


def segment_request(model: str, image: pb.ImageInput | None = None) -> pb.SegmentRequest:
    """A Segment request for `model` (a PNG unless `image` is given)."""
    return pb.SegmentRequest(model=pb.ModelRef(name=model), image=image or png())


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class SessionProxy:
    """Stands in for a version's `onnxruntime.InferenceSession`: every call goes to the real
    session, `run` first through `before_run` (hold it, slow it, or raise as a failing
    execution provider would)."""

    def __init__(self, real: object, before_run: Callable[[], None]) -> None:
        self._real = real
        self._before_run = before_run

    def run(self, *args: object, **kwargs: object) -> object:
        """The real session's run, after `before_run`."""
        self._before_run()
        return self._real.run(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def wrap_session(server: ServerThread, model: str, before_run: Callable[[], None]) -> Callable:
    """Put a SessionProxy in front of `model`'s latest version; returns the undo."""
    onnx_model = server.server.repository.get(model).session
    real = onnx_model.session
    onnx_model.session = SessionProxy(real, before_run)

    def restore() -> None:
        onnx_model.session = real

    return restore


class HeldRuns:
    """Holds every run of a model's session until `release()` (the model is busy)."""

    def __init__(self, server: ServerThread, model: str) -> None:
        self._open = threading.Event()
        self._restore = wrap_session(server, model, self._wait)

    def _wait(self) -> None:
        if not self._open.wait(TIMEOUT_S * 2):
            raise TimeoutError("the test never released the held runs")

    def release(self) -> None:
        """Let every held and later run through, and take the proxy away."""
        self._open.set()
        self._restore()


def admitted(server: ServerThread, model: str) -> int:
    """Admission tickets `model` holds now."""
    return server.server.plane.admission.snapshot().get(model, 0)


def sample(server: ServerThread, name: str, **labels: str) -> float:
    """A metric sample of the running server (0 when absent)."""
    value = server.server.metrics.registry.get_sample_value(name, labels)
    return value or 0.0
