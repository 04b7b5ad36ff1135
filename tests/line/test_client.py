"""The line client on files and folders: reject actions, annotated video, errors, exit codes."""

from __future__ import annotations

import http.server
import json
import shlex
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from app.cli import run
from tests.line.conftest import (
    LineClient,
    VisionServe,
    assert_consecutive,
    synthetic_frames,
    write_h264,
)


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(synthetic_frames(10)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return folder


class Gateway(http.server.BaseHTTPRequestHandler):
    """A PLC-gateway stand-in: records each POSTed verdict; the first POST gets a 503."""

    received: list[dict] = []
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        if type(self).calls == 1:
            self.send_response(503)  # the client retries
        else:
            type(self).received.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    Gateway.received, Gateway.calls = [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/reject"
    finally:
        server.shutdown()
        server.server_close()


def test_reject_actions_once_per_fail(
    frames_dir: Path, serve: VisionServe, gateway: str, tmp_path: Path
) -> None:
    calls = tmp_path / "rejects.txt"
    script = "import os, sys, json; v = json.load(sys.stdin); "
    script += f"out = open({str(calls)!r}, 'a'); "
    script += "out.write(os.environ['VISION_SEQUENCE'] + ' ' + v['status'] + '\\n')"
    command = f"{sys.executable} -c {shlex.quote(script)}"
    video = tmp_path / "annotated.mp4"
    client = LineClient(
        tmp_path,
        "dir",
        *("--source", str(frames_dir), "--model", "bright", "--server", serve.address),
        *("--policy", "every", "--fps", "20", "--quiet", "--annotated", str(video)),
        *("--reject-command", command, "--reject-url", gateway),
    )
    client.start()
    assert client.proc.wait(120) == 0, client.output()  # a folder ends by itself
    verdicts = client.verdicts()
    assert len(verdicts) == 10
    assert_consecutive(verdicts)
    fails = [v["sequence"] for v in verdicts if v["status"] == "FAIL"]
    assert fails == [2, 4, 6, 8, 10]  # the bright frames
    assert [line.split() for line in calls.read_text().splitlines()] == [
        [str(s), "FAIL"] for s in fails
    ]
    assert [v["sequence"] for v in Gateway.received] == fails
    assert not client.events("reject_failed")
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    capture.release()


def test_reject_url_down_is_logged_not_fatal(
    frames_dir: Path, serve: VisionServe, tmp_path: Path
) -> None:
    client = LineClient(
        tmp_path,
        "dir",
        *("--source", str(frames_dir), "--model", "bright", "--server", serve.address),
        *("--policy", "every", "--quiet", "--reject-url", "http://127.0.0.1:9/nothing"),
    )
    client.start()
    assert client.proc.wait(120) == 0, client.output()
    assert len(client.verdicts()) == 10
    failed = client.events("reject_failed")
    assert [e["sequence"] for e in failed] == [2, 4, 6, 8, 10]


def test_h264_file_raw_frames(serve: VisionServe, tmp_path: Path, rtsp_ready: None) -> None:
    video = write_h264(synthetic_frames(12), tmp_path / "line.mp4", 10)
    client = LineClient(
        tmp_path,
        "file",
        *("--source", str(video), "--model", "bright", "--server", serve.address),
        *("--policy", "every", "--encoding", "raw", "--quiet"),
    )
    client.start()
    assert client.proc.wait(120) == 0, client.output()
    statuses = [v["status"] for v in client.verdicts()]
    assert statuses == ["PASS", "FAIL"] * 6


def test_unknown_model_is_one_line_exit_2(
    frames_dir: Path, serve: VisionServe, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--source", str(frames_dir), "--model", "nope", "--server", serve.address, "--quiet"]
    assert run("line", argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vision line: NOT_FOUND"), err


def test_missing_source_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--source", str(tmp_path / "none.mp4"), "--model", "m", "--quiet"]
    assert run("line", argv) == 2
    assert "no such file or folder" in capsys.readouterr().err
