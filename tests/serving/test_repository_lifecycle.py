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
    (broken / "2" / "model.onnx").write_bytes(b"this is not an onnx file")
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
            shutil.copy(own_repository / "bright" / "2" / "model.onnx", broken / "2" / "model.onnx")
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


def test_sigterm_finishes_in_flight_requests_and_exits_zero(own_repository, tmp_path):
    config = own_repository / "bright" / "config.yaml"
    config.write_text(config.read_text().replace("max_batch_size: 8", "max_batch_size: 1"))
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "serve",
                "--models",
                str(own_repository),
                "--host",
                "127.0.0.1",
                "--grpc-port",
                str(port),
                "--http-port",
                "-1",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            _segment(stub)
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(_segment, stub) for _ in range(40)]
                time.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                outcomes = []
                for f in futures:
                    try:
                        outcomes.append(bool(f.result().masks))
                    except grpc.RpcError as exc:  # refused once shutdown began; retryable
                        outcomes.append(exc.code())
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    served = sum(1 for o in outcomes if o is True)
    refused = [o for o in outcomes if o is not True]
    assert served >= 1
    # Requests that reached the server after SIGTERM are refused by gRPC (UNAVAILABLE, or
    # CANCELLED for a stream the transport had opened but not dispatched); none fails otherwise.
    retryable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert all(code in retryable for code in refused), refused
    assert "stopped" in log.read_text()
