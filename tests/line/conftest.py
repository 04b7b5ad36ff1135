"""Real parts for the line-client tests: H.264 videos written by Debian's ffmpeg, a GStreamer
RTSP server run by the system Python, `vision serve` and `vision line` as subprocesses.

Everything is stopped by PID in finally blocks; waits poll for conditions (2 loaded cores)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")
DEEPPCB = ROOT.parent / "shared" / "datasets" / "deeppcb" / "PCBData"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    condition: Callable[[], object], timeout: float, what: str | Callable[[], str]
) -> object:
    """`condition()` once it is truthy; `what` (or what it returns, read at the end) names it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    described = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {described}")


def stop_pid(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def rtsp_missing() -> str:
    """Why the RTSP tests cannot run here ('' when they can)."""
    if shutil.which("ffmpeg") is None:
        return "Debian's ffmpeg is not installed (scripts/setup.sh installs it with apt)"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
        "('qtdemux', 'h264parse', 'avdec_h264', 'x264enc', 'rtph264pay')) else 3)"
    )
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60)
    if done.returncode != 0:
        return "GStreamer RTSP server or H.264 plugins missing (scripts/setup.sh installs them)"
    return ""


@pytest.fixture(scope="session")
def rtsp_ready() -> None:
    reason = rtsp_missing()
    if reason:
        pytest.skip(reason)


def write_h264(frames: list[np.ndarray], path: Path, fps: int, repeat: int = 1) -> Path:
    """An H.264 MP4 (libx264, yuv420p) of `frames`, the sequence played `repeat` times."""
    folder = path.parent / (path.stem + "_png")
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames * repeat):
        cv2.imwrite(str(folder / f"{i:05d}.png"), frame)
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-framerate", str(fps)]
    cmd += ["-i", str(folder / "%05d.png"), "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    cmd += ["-g", str(fps), str(path)]
    subprocess.run(cmd, check=True, timeout=300)
    return path


def synthetic_frames(count: int = 20, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """Dark and bright frames in turn (the tiny `bright` segmenter: PASS, FAIL, PASS, ...)."""
    frames = []
    for i in range(count):
        frame = np.full((*size, 3), 35 if i % 2 == 0 else 215, np.uint8)
        cv2.putText(frame, str(i), (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (90, 90, 90), 2)
        frames.append(frame)
    return frames


def deeppcb_frames(count: int) -> list[np.ndarray]:
    """The first `count` images of DeepPCB's test split (skips when the dataset is absent)."""
    split = DEEPPCB / "test.txt"
    if not split.is_file():
        pytest.skip(f"DeepPCB is not at {DEEPPCB} (see shared/datasets/README.md)")
    frames = []
    for line in split.read_text().splitlines()[:count]:
        image = DEEPPCB / line.split()[0].replace(".jpg", "_test.jpg")
        frames.append(cv2.imread(str(image), cv2.IMREAD_COLOR))
    return frames


class Process:
    """A subprocess with its output in a file; stopped by PID."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd, self.log, self.env = cmd, log, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        return stop_pid(self.proc, sig, timeout) if self.proc is not None else None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class VisionServe(Process):
    """`vision serve` on a fixed gRPC port (so that it can be restarted on the same one)."""

    def __init__(self, repo: Path, log: Path) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "app", "serve", "--models", str(repo), "--host", "127.0.0.1"]
        cmd += ["--grpc-port", str(self.port), "--http-port", str(free_port())]
        super().__init__(cmd, log)
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> VisionServe:
        super().start()
        wait_for(self._ready, 120, f"vision serve on {self.address}:\n{self.output()[-2000:]}")
        return self

    def _ready(self) -> bool:
        from serving.client import VisionClient

        if self.proc.poll() is not None:
            raise AssertionError(f"vision serve exited:\n{self.output()[-2000:]}")
        try:
            with VisionClient(self.address, timeout_s=2) as client:
                return bool(client.list_models().models)
        except Exception:  # noqa: BLE001 - not listening yet
            return False


class RtspServer(Process):
    """tests/line/rtsp_server.py under the system Python, serving one file."""

    def __init__(self, video: Path, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__([SYSTEM_PYTHON, str(RTSP_SCRIPT), str(video), str(self.port)], log)
        self.url = f"rtsp://127.0.0.1:{self.port}/line"

    def start(self) -> RtspServer:
        super().start()
        wait_for(lambda: "ready" in self.output() or self.proc.poll() is not None, 60, "RTSP")
        if self.proc.poll() is not None:
            raise AssertionError(f"RTSP server exited:\n{self.output()}")
        return self


class LineClient(Process):
    """`vision line` writing a JSONL log."""

    def __init__(self, log_dir: Path, name: str, *args: str) -> None:
        self.jsonl = log_dir / f"{name}.jsonl"
        cmd = [sys.executable, "-m", "app", "line", "--log", str(self.jsonl), *args]
        super().__init__(cmd, log_dir / f"{name}.stderr", env={**os.environ})

    def lines(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        text = self.jsonl.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line being written has no newline yet
        return [json.loads(line) for line in complete.splitlines()]

    def verdicts(self) -> list[dict]:
        return [r for r in self.lines() if "sequence" in r and "status" in r]

    def events(self, kind: str) -> list[dict]:
        return [r for r in self.lines() if r.get("event") == kind]

    def wait_verdicts(self, count: int, timeout: float = 120) -> list[dict]:
        def enough() -> list[dict] | None:
            if self.proc.poll() is not None and len(self.verdicts()) < count:
                raise AssertionError(f"vision line exited:\n{self.output()[-3000:]}")
            found = self.verdicts()
            return found if len(found) >= count else None

        return wait_for(enough, timeout, lambda: f"{count} verdicts:\n{self.diagnosis()}")

    def diagnosis(self) -> str:
        """What the client printed and the last lines of its log (its events say where it is)."""
        tail = self.jsonl.read_text()[-2000:] if self.jsonl.exists() else "(no log yet)"
        others = "".join(  # the server's and the RTSP server's logs sit beside the client's
            f"\n{log.name} tail:\n{log.read_text(errors='replace')[-1500:]}"
            for log in sorted(self.jsonl.parent.glob("*.log"))
        )
        return f"stderr:\n{self.output()[-2000:]}\nlog tail:\n{tail}{others}"


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.serving.tiny_models import build_repository

    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture
def serve(tiny_repo: Path, tmp_path: Path) -> Iterator[VisionServe]:
    server = VisionServe(tiny_repo, tmp_path / "serve.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def synthetic_video(tmp_path_factory: pytest.TempPathFactory, rtsp_ready: None) -> Path:
    """60 s at 10 fps of dark/bright frames, H.264 by ffmpeg."""
    return write_h264(synthetic_frames(20), tmp_path_factory.mktemp("video") / "line.mp4", 10, 30)


@pytest.fixture
def rtsp(synthetic_video: Path, tmp_path: Path) -> Iterator[RtspServer]:
    server = RtspServer(synthetic_video, tmp_path / "rtsp.log")
    try:
        yield server.start()
    finally:
        server.stop()


def assert_consecutive(verdicts: list[dict]) -> None:
    sequences = [v["sequence"] for v in verdicts]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), sequences
    assert sequences[0] == 1
