"""Per model-version counters for KServe's ModelStatistics (Triton's layout, in nanoseconds)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from serving.batcher import BatchStats


@dataclass
class Duration:
    """A count and total nanoseconds, as Triton's StatisticDuration."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        """Add `count` events that took `seconds` in all."""
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class VersionStatistics:
    """What Triton reports for one model version."""

    last_inference_ms: int = 0
    inference_count: int = 0  # requests' rows served
    execution_count: int = 0  # model runs (batches)
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)


class StatisticsBook:
    """Thread-safe statistics for every (model, version)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._book: dict[tuple[str, str], VersionStatistics] = {}

    def _entry(self, name: str, version: str) -> VersionStatistics:
        return self._book.setdefault((name, version), VersionStatistics())

    def record_request(self, name: str, version: str, ok: bool, seconds: float) -> None:
        """One request's outcome and latency."""
        with self._lock:
            entry = self._entry(name, version)
            (entry.success if ok else entry.fail).add(seconds)
            entry.last_inference_ms = int(time.time() * 1000)

    def record_batch(self, name: str, version: str, batch: BatchStats) -> None:
        """One model run: its rows, their queue times and the compute time."""
        with self._lock:
            entry = self._entry(name, version)
            entry.execution_count += 1
            entry.inference_count += batch.size
            for queued in batch.queue_s:
                entry.queue.add(queued)
            entry.compute_infer.add(batch.compute_s, len(batch.queue_s))
            entry.batches.setdefault(batch.size, Duration()).add(batch.compute_s)

    def snapshot(self) -> dict[tuple[str, str], VersionStatistics]:
        """A copy of every version's statistics."""
        with self._lock:
            return {key: _copy(value) for key, value in self._book.items()}


def _copy(stats: VersionStatistics) -> VersionStatistics:
    return VersionStatistics(
        stats.last_inference_ms,
        stats.inference_count,
        stats.execution_count,
        Duration(**vars(stats.success)),
        Duration(**vars(stats.fail)),
        Duration(**vars(stats.queue)),
        Duration(**vars(stats.compute_infer)),
        {k: Duration(**vars(v)) for k, v in stats.batches.items()},
    )
