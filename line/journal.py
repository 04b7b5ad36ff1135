"""The JSONL log: one line per verdict or event, appended and flushed per line."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO


class Journal:
    """Appends JSON lines to `path` (none: nowhere); flushed per line, fsynced at most 1/s.

    Events (reconnects, reject failures) are also one line on stderr. Thread-safe.
    """

    def __init__(self, path: Path | None, fsync_every_s: float = 1.0) -> None:
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._fsync_every_s = fsync_every_s
        self._last_sync = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a complete line."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                return
            self._file.write(line)
            self._file.flush()
            if time.monotonic() - self._last_sync >= self._fsync_every_s:
                os.fsync(self._file.fileno())
                self._last_sync = time.monotonic()

    def event(self, kind: str, **fields: Any) -> None:
        """Log an event line `{"event": kind, ...}` and say it on stderr."""
        record = {"event": kind, "wall_time": time.time(), **fields}
        self.write(record)
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        print(f"\nvision line: {kind} {detail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Flush, fsync and close the file."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
