"""The line client against a real RTSP camera (GStreamer) and a real `vision serve`."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.line.conftest import (
    ROOT,
    LineClient,
    RtspServer,
    VisionServe,
    assert_consecutive,
    deeppcb_frames,
    wait_for,
    write_h264,
)


def line(tmp: Path, name: str, source: str, server: str, model: str, *extra: str) -> LineClient:
    args = ["--source", source, "--model", model, "--server", server, "--quiet", *extra]
    return LineClient(tmp, name, *args)


def test_rtsp_verdicts_in_order(rtsp: RtspServer, serve: VisionServe, tmp_path: Path) -> None:
    client = line(tmp_path, "cam", rtsp.url, serve.address, "bright", "--policy", "every")
    client.start()
    try:
        client.wait_verdicts(12)
    finally:
        assert client.stop(signal.SIGTERM) == 0, client.output()
    verdicts = client.verdicts()
    assert_consecutive(verdicts)
    statuses = {v["status"] for v in verdicts}
    assert statuses == {"PASS", "FAIL"}, statuses  # dark frames pass, bright frames fail
    assert all(v["camera"] == rtsp.url and v["model_version"] == "2" for v in verdicts)
    fails = [v for v in verdicts if v["status"] == "FAIL"]
    assert all(v["findings"]["masks"][0]["label"] == "bright" for v in fails)
    assert client.events("camera_open")


def test_deeppcb_line_over_rtsp(rtsp_ready: None, tmp_path: Path) -> None:
    video = write_h264(deeppcb_frames(8), tmp_path / "pcb.mp4", 2, repeat=4)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pcb-defects").symlink_to(ROOT / "models" / "pcb-defects")
    server, camera = VisionServe(repo, tmp_path / "serve.log"), None
    camera = RtspServer(video, tmp_path / "rtsp.log")
    client = line(tmp_path, "pcb", camera.url, server.address, "pcb-defects", "--policy", "latest")
    try:
        server.start()
        camera.start()
        client.start()
        client.wait_verdicts(6, timeout=240)
    finally:
        client.stop()
        camera.stop()
        server.stop()
    verdicts = client.verdicts()
    assert_consecutive(verdicts)
    inspected = [v for v in verdicts if v["status"] in ("PASS", "FAIL")]
    assert inspected, verdicts
    # Every DeepPCB test board has defects: the detector finds some on most frames.
    fails = [v for v in inspected if v["status"] == "FAIL"]
    assert len(fails) >= len(inspected) // 2, inspected
    assert all(d["label"] for v in fails for d in v["findings"]["detections"])


def test_camera_restart(synthetic_video: Path, serve: VisionServe, tmp_path: Path) -> None:
    camera = RtspServer(synthetic_video, tmp_path / "rtsp.log")
    client = line(tmp_path, "cam", camera.url, serve.address, "bright", "--policy", "every")
    try:
        camera.start()
        client.start()
        client.wait_verdicts(5)
        camera.stop(signal.SIGKILL)
        wait_for(lambda: client.events("camera_lost"), 60, "camera_lost in the log")
        before = len(client.verdicts())
        camera.start()  # same port
        wait_for(lambda: _camera_back(client), 120, "a successful camera reconnect")
        client.wait_verdicts(before + 5)
    finally:
        assert client.stop() == 0, client.output()
        camera.stop()
    assert_consecutive(client.verdicts())
    assert "reconnect" in client.output()  # said on stderr too


def _camera_back(client: LineClient) -> bool:
    return any(e["target"] == "camera" and e["ok"] for e in client.events("reconnect"))


def test_inference_server_restart(rtsp: RtspServer, tiny_repo: Path, tmp_path: Path) -> None:
    server = VisionServe(tiny_repo, tmp_path / "serve.log")
    client = line(tmp_path, "cam", rtsp.url, server.address, "bright", "--policy", "every")
    try:
        server.start()
        client.start()
        client.wait_verdicts(5)
        server.stop(signal.SIGKILL)
        wait_for(lambda: _server_reconnects(client), 60, "a server reconnect in the log")
        before = len(client.verdicts())
        server.start()  # same port
        wait_for(lambda: client.events("reconnected"), 120, "the stream reopened")
        client.wait_verdicts(before + 5)
    finally:
        assert client.stop() == 0, client.output()
        server.stop()
    # Frames unanswered when the server died are sent again: no sequence is missing.
    assert_consecutive(client.verdicts())


def _server_reconnects(client: LineClient) -> list[dict]:
    return [e for e in client.events("reconnect") if e["target"] == "server"]


def test_two_cameras_one_model(rtsp: RtspServer, serve: VisionServe, tmp_path: Path) -> None:
    clients = [
        line(tmp_path, name, rtsp.url, serve.address, "bright", "--camera", name)
        for name in ("cam-a", "cam-b")
    ]
    try:
        for client in clients:
            client.start()
        for client in clients:
            client.wait_verdicts(8)
    finally:
        codes = [client.stop() for client in clients]
    assert codes == [0, 0], [c.output() for c in clients]
    for name, client in zip(("cam-a", "cam-b"), clients, strict=True):
        verdicts = client.verdicts()
        assert_consecutive(verdicts)
        assert {v["camera"] for v in verdicts} == {name}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_log_complete_when_stopped(
    sig: int, rtsp: RtspServer, serve: VisionServe, tmp_path: Path
) -> None:
    client = line(tmp_path, "cam", rtsp.url, serve.address, "bright", "--max-in-flight", "8")
    client.start()
    try:
        client.wait_verdicts(6)
    finally:
        code = client.stop(sig)
    assert code == 0, client.output()
    text = client.jsonl.read_text()
    assert text.endswith("\n")
    verdicts = client.verdicts()  # every line parses (json.loads would raise)
    assert len(text.splitlines()) == len(client.lines())
    assert_consecutive(verdicts)
    assert not client.events("unanswered"), client.lines()  # drained before exit
