"""Prometheus metrics, per model and version; `/metrics` on the HTTP port (serving/http/app.py).

Under `vision serve --workers N` (`serving/workers.py`) every worker runs with
PROMETHEUS_MULTIPROC_DIR set: prometheus-client then keeps counters, histograms and gauges in
files there, and the exposition of any worker adds up every worker's values
(MultiProcessCollector). Collectors that read live state at scrape time (queue depths) report
the worker that answers the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from serving.batcher import BatchStats

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Registry(CollectorRegistry):
    """A registry that remembers its custom collectors (the ones read at scrape time)."""

    def __init__(self) -> None:
        super().__init__()
        self.custom: list = []

    def register(self, collector) -> None:  # noqa: ANN001 - prometheus-client's collector type
        """Register as usual; keep collectors that are not plain metrics apart."""
        super().register(collector)
        if not isinstance(collector, MetricWrapperBase):
            self.custom.append(collector)


class _MultiProcessView:
    """Every worker's values (from the multiprocess folder) plus this process's custom ones."""

    def __init__(self, folder: str, custom: list) -> None:
        self._files = MultiProcessCollector(None, path=folder)
        self._custom = custom

    def collect(self) -> Iterable:
        """What generate_latest exposes."""
        yield from self._files.collect()
        for collector in self._custom:
            yield from collector.collect()


class _QueueDepthCollector:
    """Reads queue depths at scrape time from a callable: {(model, version): depth}."""

    def __init__(self, depths: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._depths = depths

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vision_queue_depth", "Requests waiting in the batch queue", labels=["model", "version"]
        )
        for (model, version), depth in sorted(self._depths().items()):
            family.add_metric([model, version], depth)
        yield family


class Metrics:
    """The server's Prometheus metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = _Registry()
        labels = ["api", "model", "version"]
        self.requests = Counter(
            "vision_requests", "Requests served", [*labels, "outcome"], registry=self.registry
        )
        self.failures = Counter(
            "vision_request_failures",
            "Requests that failed",
            [*labels, "error"],
            registry=self.registry,
        )
        self.abandoned = Counter(
            "vision_requests_abandoned",
            "Requests that ended unanswered: the client cancelled, or the deadline passed",
            [*labels, "reason"],  # reason: cancelled | deadline
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "vision_request_latency_seconds",
            "Request latency inside the server",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        version_labels = ["model", "version"]
        self.queue_latency = Histogram(
            "vision_queue_latency_seconds",
            "Time a request waited in the batch queue",
            version_labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_latency = Histogram(
            "vision_compute_latency_seconds",
            "Model execution time per batch",
            version_labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "vision_batch_size",
            "Rows per model execution",
            version_labels,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

        self._stream_metrics()

    def _stream_metrics(self) -> None:
        """Inspect streams (`serving/streaming.py`): open streams, frames held, drops, verdicts."""
        self.streams_open = Gauge(
            "vision_streams_open",
            "Inspect streams open",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        camera = ["model", "camera"]
        self.stream_frames_in_flight = Gauge(
            "vision_stream_frames_in_flight",
            "Frames an Inspect stream holds (decoding, queued, inferring or awaiting their turn)",
            camera,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.stream_frames_dropped = Counter(
            "vision_stream_frames_dropped",
            "Frames not inspected because they were stale when their turn came (policy LATEST)",
            camera,
            registry=self.registry,
        )
        self.stream_verdicts = Counter(
            "vision_stream_verdicts",
            "Verdicts sent on Inspect streams, by status (pass, fail, dropped, error)",
            [*camera, "status"],
            registry=self.registry,
        )

    def watch_queue_depths(self, depths: Callable[[], dict[tuple[str, str], int]]) -> None:
        """Report the queue depths that `depths` returns at each scrape."""
        self.registry.register(_QueueDepthCollector(depths))

    def observe_request(
        self, api: str, model: str, version: str, outcome: str, seconds: float
    ) -> None:
        """Count one request (and its failure, if any) and record its latency."""
        self.requests.labels(api, model, version, "ok" if outcome == "ok" else "error").inc()
        if outcome != "ok":
            self.failures.labels(api, model, version, outcome).inc()
        self.request_latency.labels(api, model, version).observe(seconds)

    def observe_abandoned(self, api: str, model: str, version: str, reason: str) -> None:
        """Count a request that was cancelled or whose deadline passed (also a failure)."""
        self.abandoned.labels(api, model, version, reason).inc()

    def observe_batch(self, model: str, version: str, batch: BatchStats) -> None:
        """Record one batch: its size, its compute time and each request's queue time."""
        self.batch_size.labels(model, version).observe(batch.size)
        self.compute_latency.labels(model, version).observe(batch.compute_s)
        for queued in batch.queue_s:
            self.queue_latency.labels(model, version).observe(queued)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type (for GET /metrics).

        With PROMETHEUS_MULTIPROC_DIR set (workers), the values of every worker, added up.
        """
        folder = os.environ.get(MULTIPROC_ENV)
        if folder:
            view = _MultiProcessView(folder, self.registry.custom)
            return generate_latest(view), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
