"""A fuzz run: a hypothesis pool of structured cases, seeded mutants of it, sent concurrently.

Shared by the CI test (`tests/fuzz/test_server_fuzz.py`, a short seeded run) and the bench
(`bench/fuzz.py`, 10^5 inputs). The tally counts statuses per API and keeps the first inputs
that got a status a client's input must never get (`targets.FAILURES`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from tests.fuzz.dicom_bytes import PHI
from tests.fuzz.mutate import Mutator
from tests.fuzz.strategies import Case, cases
from tests.fuzz.targets import FAILURES, Clients

KEEP_FAILURES = 20


def pool(count: int, seed: int) -> list[Case]:
    """`count` structured cases from the hypothesis strategies, the same for the same seed."""
    found: list[Case] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def collect(case: Case) -> None:
        found.append(case)

    collect()
    return found


def inputs(total: int, structured: list[Case], seed: int) -> Iterator[Case]:
    """The pool itself, then its mutants, `total` cases in all."""
    mutator = Mutator(seed)
    for index in range(total):
        base = structured[index % len(structured)]
        yield base if index < len(structured) else mutator.case(base)


@dataclass
class Tally:
    """Statuses per API, the slowest call, failures (first few kept) and leaked markers."""

    counts: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    failures: list[tuple[Case, str, str]] = field(default_factory=list)
    leaked: int = 0
    slowest_s: float = 0.0
    total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, case: Case, status: str, message: str, seconds: float) -> None:
        """Count one outcome."""
        with self._lock:
            self.total += 1
            self.counts[case[0]][status] += 1
            self.slowest_s = max(self.slowest_s, seconds)
            if PHI in message:
                self.leaked += 1
            if status in FAILURES and len(self.failures) < KEEP_FAILURES:
                self.failures.append((case, status, message))

    def by_status(self) -> collections.Counter:
        """Counts per status over every API."""
        every: collections.Counter = collections.Counter()
        for counter in self.counts.values():
            every.update(counter)
        return every

    def failed(self) -> int:
        """How many calls got a status in `targets.FAILURES`."""
        statuses = self.by_status()
        return sum(statuses[name] for name in FAILURES)


def send_all(
    clients: Clients, stream: Iterable[Case], workers: int = 4, tally: Tally | None = None
) -> Tally:
    """Send every case, `workers` at a time (a few queued, never the whole stream), tally
    (into `tally` when given: a run in parts)."""
    tally = Tally() if tally is None else tally
    room = threading.BoundedSemaphore(workers * 2)

    def one(case: Case) -> None:
        try:
            api, payload, model, headers = case
            outcome = clients.send(api, payload, model, headers)
            tally.add(case, outcome.status, outcome.message, outcome.seconds)
        finally:
            room.release()

    with ThreadPoolExecutor(workers) as executor:
        for case in stream:
            room.acquire()
            executor.submit(one, case)
    return tally
