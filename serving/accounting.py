"""Accounting of every request: Prometheus (`serving/metrics.py`), the KServe statistics book
(`serving/statistics.py`), why a request ended unanswered, and the admitted-requests gauge."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from serving.admission import Admission
from serving.metrics import Metrics
from serving.repository import ModelVersion
from serving.statistics import StatisticsBook
from vision.errors import DeadlineExceededError


@contextlib.contextmanager
def track(
    metrics: Metrics,
    stats: StatisticsBook,
    api: str,
    model: ModelVersion,
    deadline: float | None = None,
) -> Iterator[None]:
    """Record the outcome and latency of the request the block serves: ok, the error's type,
    and for a cancelled or expired one also `vision_requests_abandoned_total{reason}`."""
    start = time.perf_counter()
    try:
        yield
    except (Exception, asyncio.CancelledError) as exc:
        elapsed = time.perf_counter() - start
        reason = abandoned(exc, deadline)
        if reason:
            metrics.observe_abandoned(api, model.name, model.version, reason)
        metrics.observe_request(api, model.name, model.version, type(exc).__name__, elapsed)
        stats.record_request(model.name, model.version, False, elapsed)
        raise
    elapsed = time.perf_counter() - start
    metrics.observe_request(api, model.name, model.version, "ok", elapsed)
    stats.record_request(model.name, model.version, True, elapsed)


def abandoned(exc: BaseException, deadline: float | None) -> str:
    """ "cancelled" or "deadline" for a request that ended unanswered; "" for other failures."""
    if isinstance(exc, DeadlineExceededError):
        return "deadline"
    if isinstance(exc, asyncio.CancelledError):
        expired = deadline is not None and time.monotonic() >= deadline
        return "deadline" if expired else "cancelled"
    return ""


class AdmittedCollector:
    """`vision_admitted_requests{model}`: tickets held per model, read at scrape time."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge sample per model with a gate."""
        family = GaugeMetricFamily(
            "vision_admitted_requests",
            "Requests admitted per model: decoding, queued, computing or postprocessing",
            labels=["model"],
        )
        for model, held in self._admission.snapshot().items():
            family.add_metric([model], held)
        yield family
