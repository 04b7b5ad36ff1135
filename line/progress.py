"""Live progress: throughput, p50/p99 verdict latency and counts, one line on stderr ~1/s."""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

WINDOW_S = 5.0


class Stats:
    """Counts by status and a window of recent latencies and arrival times. Thread-safe."""

    def __init__(self, skipped: Callable[[], int] = lambda: 0) -> None:
        self.skipped = skipped  # frames the reader replaced before they were sent (latest)
        self.counts: collections.Counter[str] = collections.Counter()
        self._latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self._arrivals: collections.deque[float] = collections.deque(maxlen=10000)
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> None:
        """Count one verdict record."""
        with self._lock:
            self.counts[record["status"].lower()] += 1
            self._latencies.append(record["latency_ms"])
            self._arrivals.append(time.monotonic())

    def fps(self) -> float:
        """Verdicts per second over the last few seconds."""
        with self._lock:
            now = time.monotonic()
            recent = [t for t in self._arrivals if now - t <= WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 of the recent verdict latencies (ms); 0 before any."""
        with self._lock:
            values = np.array(self._latencies, dtype=np.float64)
        if values.size == 0:
            return 0.0, 0.0
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))

    def line(self) -> str:
        """The status line."""
        p50, p99 = self.percentiles()
        c = self.counts
        return (
            f"{self.fps():6.1f} fps  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
            f"pass {c['pass']}  fail {c['fail']}  drop {c['dropped']}  error {c['error']}  "
            f"skipped {self.skipped()}"
        )


class ProgressLine(threading.Thread):
    """Rewrites the status line every `interval_s` on a terminal; on a file, a line per 10 s."""

    def __init__(self, stats: Stats, stop: threading.Event, out: TextIO = sys.stderr) -> None:
        super().__init__(name="progress", daemon=True)
        self.stats, self.stop, self.out = stats, stop, out
        self.tty = out.isatty()
        self.interval_s = 1.0 if self.tty else 10.0

    def run(self) -> None:
        """Print until stopped."""
        while not self.stop.wait(self.interval_s):
            self.show()

    def show(self, final: bool = False) -> None:
        """Print the line once (`final`: end it with a newline)."""
        if self.tty:
            end = "\n" if final else ""
            self.out.write(f"\r\x1b[K{self.stats.line()}{end}")
        else:
            self.out.write(f"vision line: {self.stats.line()}\n")
        self.out.flush()
