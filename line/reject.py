"""Reject actions for failing frames: a command or an HTTP POST, run off the stream's thread.

One worker thread and a bounded queue: a slow action never blocks the stream; when the queue is
full the verdict's action is not run and that is logged (`reject_overflow`).
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from line.journal import Journal

Action = Callable[[dict[str, Any]], None]
COMMAND_TIMEOUT_S = 10.0


class RejectError(Exception):
    """A reject action that did not succeed (logged, never fatal)."""


def command_action(command: str) -> Action:
    """Run `command` (shell words) with the verdict JSON on stdin and VISION_* variables."""
    argv = shlex.split(command)

    def run(record: dict[str, Any]) -> None:
        env = {
            **os.environ,
            "VISION_CAMERA": str(record["camera"]),
            "VISION_SEQUENCE": str(record["sequence"]),
            "VISION_STATUS": record["status"],
            "VISION_VERDICT": json.dumps(record),
        }
        done = subprocess.run(
            argv,
            input=json.dumps(record).encode(),
            env=env,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace").strip()[-200:]
            raise RejectError(f"exit status {done.returncode}: {stderr}")

    return run


def post_action(url: str, timeout_s: float = 2.0, attempts: int = 3) -> Action:
    """POST the verdict JSON to `url`; retried `attempts` times with a short back-off."""

    def run(record: dict[str, Any]) -> None:
        body = json.dumps(record).encode()
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    response.read()
                return
            except (urllib.error.URLError, OSError) as exc:
                if attempt == attempts:
                    raise RejectError(f"POST {url}: {exc}") from exc
                time.sleep(0.2 * 2 ** (attempt - 1))

    return run


class RejectWorker(threading.Thread):
    """Runs every action for each failing record submitted, in order, on its own thread."""

    def __init__(self, actions: list[Action], journal: Journal, capacity: int = 64) -> None:
        super().__init__(name="reject", daemon=True)
        self.actions, self.journal = actions, journal
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(capacity)
        self.done = 0
        self.failed = 0

    def submit(self, record: dict[str, Any]) -> None:
        """Queue a failing verdict; never waits."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.journal.event("reject_overflow", sequence=record["sequence"])

    def run(self) -> None:
        """Run queued actions until `close()`."""
        while (record := self._queue.get()) is not None:
            for action in self.actions:
                self._run_one(action, record)

    def _run_one(self, action: Action, record: dict[str, Any]) -> None:
        try:
            action(record)
            self.done += 1
        except (RejectError, OSError, subprocess.TimeoutExpired) as exc:
            self.failed += 1
            self.journal.event("reject_failed", sequence=record["sequence"], error=str(exc))

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the queued actions (at most `timeout_s`), then stop."""
        self._queue.put(None)
        self.join(timeout_s)
