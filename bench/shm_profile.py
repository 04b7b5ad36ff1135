"""Where a ModelInfer's time goes inside the server: py-spy samples, grouped, per request.

Used by `python -m bench.shm --profile S` and `python -m bench.workers --profile S`: while one
client sends requests (seg256 through shared memory, or tiny through bytes; concurrency 1) for
S seconds, `py-spy record` samples every thread of the server (`--threads`, idle frames
included) and the samples are sorted into the groups below. With the
number of requests answered in that window, each group becomes milliseconds per request.
Needs py-spy on PATH (`pip install py-spy`); skipped with a message otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

RATE_HZ = 250
GROUPS = (
    ("ONNX Runtime session.run (the model)", ("Session.run",)),
    # The inference thread wakes the loop (a socket write that drops the GIL), then waits to
    # re-take the GIL while the loop answers the request: that wait overlaps the reply and grows
    # with the machine's load; it is not on the request's path.
    ("GIL re-take after waking the loop (off path)", ("call_soon_threadsafe",)),
    ("our code: servicer, data plane, batcher, shm", ("serving/",)),
    ("gRPC aio and asyncio callbacks", ("Handle._run", "grpc")),
)
IDLE = ("EpollSelector.select", "_worker (concurrent", "Thread.run (threading", "_poll_wrapper")


def _group(frames: list[str]) -> str:
    text = ";".join(frames)
    leaf = frames[-1]
    if any(word in leaf for word in IDLE) and "Session.run" not in text:
        return "idle (waiting for work)"
    for name, words in GROUPS:
        where = text if name.startswith(("ONNX", "GIL")) else leaf
        if any(word in where for word in words):
            return name
    return "other Python"


def summarize(raw: Path) -> Counter:
    """Samples per group, from py-spy's raw (collapsed stacks) output."""
    groups: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            groups[_group(stack.split(";"))] += int(count)
    return groups


def profile(
    pid: int, call: Callable[[], object], seconds: float, what: str = "shared-memory requests"
) -> str:
    """Drive `call` for `seconds` while py-spy samples process `pid`; a printable breakdown
    (`what`: how the header names the requests)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return "profile skipped: py-spy is not installed (pip install py-spy)"
    with tempfile.TemporaryDirectory(prefix="bench-spy-") as tmp:
        raw = Path(tmp) / "server.raw"
        command = [spy, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", str(RATE_HZ)]
        command += ["--threads", "--idle", "--nonblocking", "--format", "raw", "-o", str(raw)]
        recorder = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        done, answered = threading.Event(), [0]

        def drive() -> None:
            while not done.is_set():
                call()
                answered[0] += 1

        time.sleep(0.5)  # py-spy attaches
        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        output = recorder.communicate(timeout=seconds + 60)[0].decode(errors="replace")
        done.set()
        driver.join(60)
        if recorder.returncode != 0 or not raw.exists():
            return f"profile failed (py-spy exit {recorder.returncode}): {output[-500:]}"
        groups = summarize(raw)
    return _format(groups, answered[0], seconds, what)


def _format(groups: Counter, requests: int, seconds: float, what: str) -> str:
    per_request_ms = 1000.0 / RATE_HZ / max(1, requests)
    lines = [
        f"server profile (py-spy, {RATE_HZ} Hz, every thread, {seconds:g} s, {requests} "
        f"{what} at c=1): samples, ms per request"
    ]
    for name, samples in groups.most_common():
        lines.append(f"  {name:<46} {samples:>7} {samples * per_request_ms:>8.3f}")
    return "\n".join(lines)
