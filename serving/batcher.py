"""Dynamic batching: requests for one model version queue here and run together.

Each request is a dict of input tensors with a leading batch dimension (1 for an image from
vision.v1, N for a KServe request). The worker takes the oldest request, waits at most
`max_queue_delay_ms` for more with the same per-row shapes, concatenates up to
`max_batch_size` rows, runs the model once (on the inference thread; with the opt-in
`batching.inline_max_ms`, a lone request of a shape that last ran that fast, on the event loop
itself) and splits the outputs
back. A request whose deadline passed while queued is answered DeadlineExceeded without
running; when a batch fails, its requests are retried one by one so one bad input fails only
itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vision.config import BatchingSpec
from vision.errors import (
    DeadlineExceededError,
    ModelUnavailableError,
    QueueFullError,
    VisionError,
)

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Feeds]


# Consecutive execution failures (not input errors) after which the version stops serving.
FAILURES_TO_MARK = 3
# `batching.inline_max_ms` (opt-in): a lone request (nothing else queued) whose shape's recent
# runs took at most that long runs on the event-loop thread, since the hop to the inference
# thread and back costs more than such a run (bench/shm_levers.py: tiny model, -0.2 ms p50 at
# concurrency 1, no loss at 8). Off by default: a run that suddenly stalls (a loaded CPU, a
# stuck device) would block the loop, and with it admission, health and every other model.


class RecentDurations:
    """The median of the last `size` durations (seconds; 0 before the first): an estimate that
    one stalled run does not skew."""

    def __init__(self, size: int = 16) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self.value = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration and update the median."""
        self._values.append(seconds)
        ordered = sorted(self._values)
        middle = len(ordered) // 2
        if len(ordered) % 2:
            self.value = ordered[middle]
        else:
            self.value = (ordered[middle - 1] + ordered[middle]) / 2.0


class BatcherClosedError(ModelUnavailableError):
    """The batcher stopped taking requests (its model version is being replaced or unloaded)."""


class ExecutionFailedError(ModelUnavailableError):
    """The runtime failed to run the model (an execution provider fault, not a bad input).

    UNAVAILABLE: the request may be retried on another replica. After `FAILURES_TO_MARK` such
    failures in a row the version is marked failed and refuses requests until it is reloaded.
    """


@dataclass
class BatchStats:
    """What one batch run measured; handed to the metrics observer."""

    size: int
    queue_s: list[float]
    compute_s: float


@dataclass(eq=False)
class _Pending:
    feeds: Feeds
    rows: int
    key: tuple
    deadline: float | None
    enqueued: float
    future: asyncio.Future = field(repr=False)


@dataclass
class BatchResult:
    """Outputs for one request, plus its queue and compute time in seconds."""

    outputs: Feeds
    queue_s: float
    compute_s: float
    batch_size: int


def _shape_key(feeds: Feeds) -> tuple:
    return tuple(sorted((k, v.shape[1:], str(v.dtype)) for k, v in feeds.items()))


class DynamicBatcher:
    """A per-model-version queue with one worker task and one inference thread."""

    def __init__(
        self,
        run: RunFn,
        spec: BatchingSpec,
        name: str = "",
        observer: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._run = run
        self._spec = spec
        self._inline_max_s = spec.inline_max_ms / 1000.0  # 0: never on the loop
        self._name = name
        self._observer = observer
        self._max_rows = max(1, spec.max_batch_size)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        self._closing = False
        self._worker: asyncio.Task | None = None
        self._running: list[_Pending] = []  # the batch on the inference thread now
        self._compute = RecentDurations()  # one batch's compute time, recent median
        self._row_compute = RecentDurations()  # compute time per row, recent median
        self._failures = 0  # execution failures in a row
        self._inline_key: tuple | None = None  # shape of the last run short enough to inline
        self.failed_reason = ""  # set once the version is marked failed

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return len(self._queue)

    @property
    def compute_estimate_s(self) -> float:
        """One batch's compute time in seconds: the median of recent batches (0 before one)."""
        return self._compute.value

    @property
    def row_compute_estimate_s(self) -> float:
        """Compute time per row in seconds: the median over recent batches (0 before one)."""
        return self._row_compute.value

    def start(self) -> None:
        """Start the worker task (on the running event loop); idempotent."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, feeds: Feeds, deadline: float | None = None) -> BatchResult:
        """Queue one request; `deadline` is an absolute time.monotonic() value or None."""
        if self._closing:
            raise BatcherClosedError(f"model {self._name} is unloading; retry")
        if self.failed_reason:
            raise ExecutionFailedError(f"model {self._name} is marked failed: {self.failed_reason}")
        if self._waiting() >= self._spec.max_queue_size:
            raise QueueFullError(
                f"model {self._name}: queue full ({self._spec.max_queue_size} requests waiting); "
                "retry with backoff or raise batching.max_queue_size"
            )
        rows = next(iter(feeds.values())).shape[0]
        pending = _Pending(
            feeds,
            rows,
            _shape_key(feeds),
            deadline,
            time.monotonic(),
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(pending)
        self._wakeup.set()
        return await pending.future

    def _waiting(self) -> int:
        """Queued requests that wait for a batch to finish: with no batch running, the head of
        the queue (up to one batch) is about to run, not waiting (so requests that arrive in
        one burst before the worker wakes are not refused with tickets to spare)."""
        if self._running:
            return len(self._queue)
        return max(0, len(self._queue) - max(1, self._spec.max_batch_size))

    async def close(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting; finish what is queued (bounded by `drain_timeout`), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), drain_timeout)
            except TimeoutError:
                self._worker.cancel()
                self._fail_all(
                    ModelUnavailableError(
                        f"model {self._name} was unloaded before this request ran "
                        "(drain timeout); retry"
                    )
                )
        self._executor.shutdown(wait=False)

    def _fail_all(self, error: Exception) -> None:
        """Answer `error` to every queued request and to the batch still running."""
        for pending in self._running:
            if not pending.future.done():
                pending.future.set_exception(error)
        self._running = []
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch: list[_Pending] = []
            try:
                batch = await self._collect()
                if batch:
                    await self._execute(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                log.exception("model %s: batcher error", self._name)
                for pending in batch:
                    self._settle(pending, exc)

    async def _collect(self) -> list[_Pending]:
        """Take the oldest live request and whatever fits beside it within the queue delay."""
        first = self._pop_live()
        if first is None:
            return []
        batch, rows = [first], first.rows
        flush_at = first.enqueued + self._spec.max_queue_delay_ms / 1000.0
        while rows < self._max_rows:
            rows += self._take_matching(batch, first.key, self._max_rows - rows)
            remaining = flush_at - time.monotonic()
            if rows >= self._max_rows or remaining <= 0 or self._closing:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                rows += self._take_matching(batch, first.key, self._max_rows - rows)
                break
        return batch

    def _pop_live(self) -> _Pending | None:
        while self._queue:
            pending = self._queue.popleft()
            if self._expired(pending):
                continue
            return pending
        return None

    def _expired(self, pending: _Pending) -> bool:
        if pending.future.done():  # cancelled by the client
            return True
        if pending.deadline is not None and time.monotonic() >= pending.deadline:
            pending.future.set_exception(
                DeadlineExceededError(f"model {self._name}: deadline passed while queued")
            )
            return True
        return False

    def _take_matching(self, batch: list[_Pending], key: tuple, room: int) -> int:
        taken = 0
        for pending in list(self._queue):
            if pending.key != key or pending.rows > room - taken:
                continue
            self._queue.remove(pending)
            if self._expired(pending):
                continue
            batch.append(pending)
            taken += pending.rows
        return taken

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self._running = batch
        try:
            if self._runs_inline(batch):
                outputs = self._run_batch(batch)
            else:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, batch)
        except Exception as exc:  # noqa: BLE001 - isolate the bad request below
            if len(batch) == 1:
                self._settle(batch[0], self._failure(exc))
                return
            log.warning(
                "model %s: batch of %d failed (%s); retrying one by one",
                self._name,
                len(batch),
                type(exc).__name__,
            )
            for pending in batch:
                await self._execute([pending])
            return
        finally:
            self._running = []
        compute_s = time.monotonic() - started
        self._failures = 0
        self._compute.add(compute_s)
        fast = len(batch) == 1 and compute_s <= self._inline_max_s
        self._inline_key = batch[0].key if fast else None
        self._row_compute.add(compute_s / max(1, sum(p.rows for p in batch)))
        self._deliver(batch, outputs, started, compute_s)

    def _runs_inline(self, batch: list[_Pending]) -> bool:
        """A lone request of the shape that last ran within `inline_max_ms`, recent runs too."""
        return (
            len(batch) == 1
            and not self._queue
            and batch[0].key == self._inline_key
            and 0 < self._compute.value <= self._inline_max_s
        )

    def _failure(self, exc: Exception) -> Exception:
        """What a request whose run raised `exc` is answered; marks the version after a run of
        execution failures. Input errors (VisionError) are the request's own and pass through."""
        if isinstance(exc, VisionError):
            return exc
        self._failures += 1
        kind = type(exc).__name__
        log.error("model %s: execution failed (%s), %d in a row", self._name, kind, self._failures)
        if self._failures >= FAILURES_TO_MARK and not self.failed_reason:
            self.failed_reason = (
                f"execution failed {self._failures} times in a row ({kind}); "
                "reload the model (repository load) once its runtime is fixed"
            )
            log.error("model %s marked failed: %s", self._name, self.failed_reason)
        return ExecutionFailedError(
            f"model {self._name} failed to run this request ({kind}); retry, or on another replica"
        )

    def _run_batch(self, batch: list[_Pending]) -> Feeds:
        if len(batch) == 1:
            outputs = self._run(batch[0].feeds)
        else:
            names = batch[0].feeds.keys()
            outputs = self._run({n: np.concatenate([p.feeds[n] for p in batch]) for n in names})
        _check_rows(self._name, outputs, sum(p.rows for p in batch))
        return outputs

    def _deliver(self, batch: list[_Pending], outputs: Feeds, started: float, compute_s: float):
        rows = sum(p.rows for p in batch)
        offset = 0
        for pending in batch:
            part = {k: v[offset : offset + pending.rows] for k, v in outputs.items()}
            offset += pending.rows
            result = BatchResult(part, started - pending.enqueued, compute_s, rows)
            self._settle(pending, result)
        if self._observer is not None:
            self._observer(BatchStats(rows, [started - p.enqueued for p in batch], compute_s))

    @staticmethod
    def _settle(pending: _Pending, value: BatchResult | Exception) -> None:
        if pending.future.done():
            return
        if isinstance(value, Exception):
            pending.future.set_exception(value)
        else:
            pending.future.set_result(value)


def _check_rows(name: str, outputs: Feeds, rows: int) -> None:
    """Every output keeps the batch dimension: a model that answers another number of rows
    would hand one caller's row to another (ValueError; a batch is then retried one by one)."""
    found = {k: (v.shape[0] if np.ndim(v) else 0) for k, v in outputs.items()}
    wrong = {k: n for k, n in found.items() if n != rows}
    if wrong:
        log.error("model %s: outputs with %s rows for a batch of %d", name, wrong, rows)
        raise ValueError(f"model {name}: outputs {sorted(wrong)} do not have {rows} rows")
