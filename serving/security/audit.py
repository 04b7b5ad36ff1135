"""The audit trail: sign-ins, denials, admin calls, model loads and unloads, reloads.

Each event is one JSON object, written to the logger `vision.audit` and, with
`--audit-log FILE`, appended to a JSON-lines file. Events carry token names, roles, peers,
methods and model names; never a token, a header value or request contents.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("vision.audit")


class AuditLog:
    """Appends audit events to the `vision.audit` logger and an optional JSON-lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = self._open() if path is not None else None

    def _open(self) -> TextIO:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OSError(f"cannot open the audit log {self.path}: {exc.strerror}") from exc

    def reopen(self) -> None:
        """Open the file again by name (SIGHUP after log rotation moved it away)."""
        if self.path is None:
            return
        fresh = self._open()
        with self._lock:
            old, self._file = self._file, fresh
        if old is not None:
            old.close()

    def record(self, event: str, **fields: Any) -> None:
        """Write one event (`fields` must be JSON-serialisable and free of secrets)."""
        entry = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **fields,
        }
        line = json.dumps(entry, sort_keys=False, default=str)
        log.info("%s", line)
        if self._file is None:
            return
        with self._lock:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except (OSError, ValueError):
                log.exception("cannot write the audit log %s", self.path)

    def close(self) -> None:
        """Close the file (events still reach the logger)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
