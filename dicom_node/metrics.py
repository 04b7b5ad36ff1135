"""The DICOM node's Prometheus metrics, in the registry the caller gives (the server's, for
`/metrics`). Labels are states, destinations (`AE@host:port`) and outcomes: never patient data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from dicom_node.delivery import Delivery, Outcome

# Seconds from enqueue to the destination's success: seconds when the PACS is up, hours when not.
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
STORE_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

Counts = Callable[[], Mapping[Enum, int]]


class _StateCollector:
    """Gauges read from the database at scrape time: jobs by state, outbox items by state."""

    def __init__(self, jobs: Counts, items: Counts) -> None:
        self._jobs, self._items = jobs, items

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, help_text, counts in (
            ("vision_dicom_jobs", "DICOM node jobs (series x model) by state", self._jobs),
            (
                "vision_dicom_outbox_items",
                "Outbox deliveries (object x destination) by state",
                self._items,
            ),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["state"])
            for state, count in counts().items():
                family.add_metric([str(state.value)], count)
            yield family


class NodeMetrics:
    """Delivery counters and latencies, and (after `watch`) the job and outbox gauges."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "vision_dicom_deliveries",
            "Delivery attempts by destination and outcome (sent, temporary, permanent)",
            ["destination", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "vision_dicom_delivery_retries",
            "Temporary failures scheduled for a retry with back-off",
            ["destination"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "vision_dicom_delivery_latency_seconds",
            "From enqueue to the destination's success response (waits and retries included)",
            ["destination"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.store_latency = Histogram(
            "vision_dicom_store_latency_seconds",
            "One C-STORE attempt (the first of a batch includes the association)",
            ["destination"],
            buckets=STORE_BUCKETS,
            registry=registry,
        )

    def watch(self, jobs: Counts, items: Counts) -> None:
        """Report `jobs()` and `items()` ({state: count}) at each scrape (JobStore.counts,
        Outbox.counts)."""
        self.registry.register(_StateCollector(jobs, items))

    def observe_delivery(
        self, destination: str, delivery: Delivery, since_enqueue_s: float
    ) -> None:
        """Count one attempt; record its latency, and the end-to-end one when it succeeded."""
        self.deliveries.labels(destination, delivery.outcome.value).inc()
        if delivery.outcome is Outcome.TEMPORARY:
            self.retries.labels(destination).inc()
        if delivery.seconds > 0:
            self.store_latency.labels(destination).observe(delivery.seconds)
        if delivery.outcome is Outcome.SENT:
            self.delivery_latency.labels(destination).observe(max(0.0, since_enqueue_s))
