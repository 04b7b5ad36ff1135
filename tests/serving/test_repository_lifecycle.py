"""Model repository at run time: failed loads, reloads under load, auth, shutdown, logs."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.serving.conftest import start_server
from tests.serving.tiny_models import build_repository

ROOT = Path(__file__).resolve().parents[2]


def _image() -> pb.ImageInput:
    pixels = np.zeros((64, 64), np.uint8)
    pixels[10:30, 10:30] = 255
    return pb.ImageInput(encoded=cv2.imencode(".png", pixels)[1].tobytes())


def _segment(stub, name="bright", timeout=30):
    request = pb.SegmentRequest(model=pb.ModelRef(name=name), image=_image())
    return stub.Segment(request, timeout=timeout)


@pytest.fixture()
def own_repository(tmp_path: Path) -> Path:
    return build_repository(tmp_path / "models")


def test_broken_model_is_unavailable_with_reason_others_serve(own_repository):
    broken = own_repository / "broken"
    shutil.copytree(own_repository / "bright", broken)
    (broken / "config.yaml").write_text(
        (broken / "config.yaml").read_text().replace("name: bright", "name: broken")
    )
    for version in ("1", "2"):  # one good version would keep serving (test_repository_versions)
        (broken / version / "model.onnx").write_bytes(b"this is not an onnx file")
    running = start_server(own_repository)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            assert _segment(stub).masks
            with pytest.raises(grpc.RpcError) as info:
                _segment(stub, "broken")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "failed to load" in info.value.details()
            models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
            status = models["broken"].versions[0]
            assert status.state == pb.MODEL_STATE_UNAVAILABLE and "failed to load" in status.reason
            # Fix the file on disk and reload at run time.
            for version in ("1", "2"):
                good = own_repository / "bright" / version / "model.onnx"
                shutil.copy(good, broken / version / "model.onnx")
            running.call(running.server.repository.load("broken"))
            assert _segment(stub, "broken").masks
    finally:
        running.stop()


def test_config_naming_a_missing_output_is_unavailable_with_reason(own_repository):
    """A config whose image_score_output the ONNX file lacks fails at load, not per request."""
    wrong = own_repository / "wrong-score"
    shutil.copytree(own_repository / "bright", wrong)
    text = (wrong / "config.yaml").read_text().replace("name: bright", "name: wrong-score")
    (wrong / "config.yaml").write_text(
        text.replace("image_score_output: ''", "image_score_output: nope")
    )
    running = start_server(own_repository)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
            reason = models["wrong-score"].versions[0].reason
            assert models["wrong-score"].versions[0].state == pb.MODEL_STATE_UNAVAILABLE
            assert "image_score_output 'nope'" in reason
            with pytest.raises(grpc.RpcError) as info:
                _segment(stub, "wrong-score")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert _segment(stub).masks
    finally:
        running.stop()


def test_reload_under_load_drops_nothing(own_repository):
    running = start_server(own_repository)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(_segment, stub) for _ in range(60)]
                for _ in range(3):
                    running.call(running.server.repository.load("bright"))
                results = [f.result() for f in futures]
        assert all(r.masks for r in results)
    finally:
        running.stop()


def test_api_key_required_when_configured(own_repository):
    running = start_server(own_repository, api_key="s3cret")
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                _segment(stub)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            request = pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=_image())
            response = stub.Segment(request, metadata=(("authorization", "Bearer s3cret"),))
            assert response.masks
    finally:
        running.stop()


def test_patient_identifiers_never_reach_the_log(server, vision_stub, caplog):
    from tests.serving.test_vision_api import _dicom

    pixels = np.zeros((40, 40), np.uint16)
    caplog.set_level(logging.DEBUG)
    vision_stub.Segment(
        pb.SegmentRequest(
            model=pb.ModelRef(name="bright"), image=pb.ImageInput(encoded=_dicom(pixels))
        )
    )
    with pytest.raises(grpc.RpcError):
        vision_stub.Segment(
            pb.SegmentRequest(
                model=pb.ModelRef(name="bright"), image=pb.ImageInput(encoded=_dicom(pixels)[:400])
            )
        )
    assert "Secret" not in caplog.text and "Patient" not in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admitted(http_port: int, model: str) -> float:
    """The server's vision_admitted_requests gauge for `model` (0 when not yet reported)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    prefix = f'vision_admitted_requests{{model="{model}"}} '
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0


def _serve(repository: Path, grpc_port: int, http_port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "VISION_API_KEY"}
    args = ["--models", str(repository), "--host", "127.0.0.1", "--drain-timeout", "20"]
    ports = ["--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "serve", *args, *ports],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _until_refused(stub, image: pb.ImageInput, stop: threading.Event) -> list:
    """Send Segment calls one after another until one is refused; every outcome, in order."""
    outcomes: list = []
    while not stop.is_set():
        request = pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=image)
        try:
            outcomes.append(bool(stub.Segment(request, timeout=120).masks))
        except grpc.RpcError as exc:
            outcomes.append(exc.code())
            break
    return outcomes


def test_sigterm_finishes_in_flight_requests_and_exits_zero(own_repository, tmp_path):
    """SIGTERM while requests are admitted: each one finishes (or, never admitted, is refused
    UNAVAILABLE), none waits for its deadline, the process exits 0.

    Once, on a loaded machine, a call came back DEADLINE_EXCEEDED after 30 s: the drain was
    grpc's own grace period (30 s), and a call grpc.aio takes in just as shutdown begins can be
    left unanswered, so it held the server for the whole grace while the client's deadline ran
    out. Now the data plane drains first (new requests UNAVAILABLE, admitted ones finish) and
    the transports stop after it with a short grace. The test waits on observable state (the
    admitted-requests gauge), not on sleeps, and no timeout in it is near the drain timeout.
    """
    config = own_repository / "bright" / "config.yaml"
    config.write_text(config.read_text().replace("max_batch_size: 8", "max_batch_size: 1"))
    pixels = np.zeros((1500, 1500), np.uint8)  # a decode and resize long enough to be seen
    pixels[100:600, 100:600] = 255
    image = pb.ImageInput(encoded=cv2.imencode(".png", pixels)[1].tobytes())
    grpc_port, http_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    proc = _serve(own_repository, grpc_port, http_port, log)
    stop = threading.Event()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            assert _segment(stub, timeout=120).masks
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(_until_refused, stub, image, stop) for _ in range(8)]
                _wait_for(lambda: _admitted(http_port, "bright") >= 1, "an admitted request")
                proc.send_signal(signal.SIGTERM)
                outcomes = [o for f in futures for o in f.result(timeout=120)]
        assert proc.wait(60) == 0, log.read_text()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    served = sum(1 for o in outcomes if o is True)
    refused = [o for o in outcomes if o is not True]
    assert served >= 1
    # Calls that reached the server after SIGTERM are refused UNAVAILABLE (by the data plane
    # while it drains, or by gRPC once it stopped), or CANCELLED for a stream the transport had
    # opened but not dispatched; no admitted call fails, none waits for its deadline.
    retryable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert all(code in retryable for code in refused), refused
    text = log.read_text()
    assert "drain: no admitted request left" in text and "stopped" in text, text


def _wait_for(condition, what: str, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
