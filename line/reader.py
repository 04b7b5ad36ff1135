"""The frame reader thread: reads the source, paces files, reopens live sources.

With policy `latest` it keeps one slot (a new frame replaces the one not yet taken: no buffer
builds up); with `every` a bounded queue (the reader waits when it is full).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import numpy as np

from line.backoff import Backoff
from line.journal import Journal
from line.sources import Source, SourceError


@dataclass
class Captured:
    """A frame and when it was captured (Unix ns); `sequence` is set when it is sent."""

    image: np.ndarray
    capture_ns: int
    sequence: int = 0


class FrameBuffer:
    """One slot (`capacity` 1, replace) or a bounded queue (wait when full); closable."""

    def __init__(self, capacity: int, replace: bool, stop: threading.Event) -> None:
        self._items: collections.deque[Captured] = collections.deque()
        self._capacity, self._replace, self._stop = capacity, replace, stop
        self._cond = threading.Condition()
        self._closed = False
        self.replaced = 0

    def put(self, item: Captured) -> None:
        """Add a frame: replace the oldest (latest) or wait for room (every)."""
        with self._cond:
            while not self._replace and len(self._items) >= self._capacity:
                if self._stop.is_set():
                    return
                self._cond.wait(0.1)
            if len(self._items) >= self._capacity:
                self._items.popleft()
                self.replaced += 1
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float) -> Captured | None:
        """The oldest frame, or None after `timeout`; raises EOFError once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._closed:
                raise EOFError
            return None

    def close(self) -> None:
        """No more frames will come."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FrameReader(threading.Thread):
    """Reads `source` into `buffer` until the source ends or `stop` is set."""

    def __init__(
        self,
        source: Source,
        buffer: FrameBuffer,
        journal: Journal,
        stop: threading.Event,
        pace_fps: float = 0.0,
    ) -> None:
        super().__init__(name="frame-reader", daemon=True)
        self.source, self.buffer, self.journal, self.stop = source, buffer, journal, stop
        self.pace_fps = pace_fps
        self.backoff = Backoff()
        self.error: BaseException | None = None
        self.frames_read = 0
        self._tried = False

    def run(self) -> None:
        """The reading loop; a non-live source's error is kept in `error` for the caller."""
        try:
            self._loop()
        except SourceError as exc:
            self.error = exc
        finally:
            self.source.release()
            self.buffer.close()

    def _loop(self) -> None:
        opened = not self.source.live  # files were opened by the caller (errors at start)
        start = time.monotonic()
        while not self.stop.is_set():
            if not opened:
                opened = self._reopen()
                continue
            frame = self.source.read()
            if frame is None:
                if not self.source.live:
                    return
                self.journal.event("camera_lost", source=self.source.name)
                opened = False
                continue
            self.backoff.reset()
            self._pace(start)
            self.frames_read += 1
            self.buffer.put(Captured(frame, time.time_ns()))

    def _reopen(self) -> bool:
        first = not self._tried
        self._tried = True
        attempt, delay = (0, 0.0) if first else self.backoff.wait(self.stop)
        if self.stop.is_set():
            return False
        try:
            self.source.open()
        except SourceError as exc:
            self.journal.event(
                "reconnect",
                target="camera",
                attempt=attempt,
                delay_s=delay,
                ok=False,
                error=str(exc),
            )
            return False
        kind = "camera_open" if first else "reconnect"
        self.journal.event(kind, target="camera", attempt=attempt, delay_s=delay, ok=True)
        return True

    def _pace(self, start: float) -> None:
        if self.pace_fps > 0 and not self.source.live:
            due = start + self.frames_read / self.pace_fps
            self.stop.wait(max(0.0, due - time.monotonic()))
