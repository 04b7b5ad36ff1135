"""Dynamic batching: requests for one model version queue here and run together.

Each request is a dict of input tensors with a leading batch dimension (1 for an image from
vision.v1, N for a KServe request). The worker takes the oldest request, waits at most
`max_queue_delay_ms` for more with the same per-row shapes, up to `max_batch_size` rows, and
hands the batch to the version's inference thread, which concatenates the rows and runs the model
once; the outputs are split back per request (with the opt-in `batching.inline_max_ms`, a lone
request of a shape that last ran that fast runs on the event loop itself).

The batches are pipelined: while one runs, the worker already collects the next and hands it
over, so the thread starts it the moment the running one ends, without waiting for the event
loop to deliver outputs and collect (at most one batch waits for the thread; until the thread
takes it, requests of its shape that arrive still join it, up to `max_batch_size` rows). A
request whose deadline passed while queued, or while its batch waited for the thread (checked
again on the thread just before the run), is answered DeadlineExceeded without running; when a
batch fails, the thread retries its requests one by one so one bad input fails only itself. The
outcomes go back to the event loop through a notifier thread, so the inference thread keeps the
GIL from one run to the next.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
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


# A handed-over batch's state: OPEN (waiting for the inference thread; requests of its shape
# may still join it), CLAIMED (the thread took it: its members are fixed), DROPPED (answered
# unavailable past the drain timeout: the thread skips it).
_OPEN, _CLAIMED, _DROPPED = "open", "claimed", "dropped"


@dataclass(eq=False)
class _Batch:
    """Requests handed to the inference thread as one batch."""

    members: list[_Pending]
    rows: int
    state: str = _OPEN


@dataclass(eq=False)
class _Run:
    """One model run on the inference thread: a batch, or one request of a failed batch."""

    members: list[_Pending]
    started: float
    compute_s: float
    outputs: Feeds | None = None
    error: Exception | None = None


@dataclass(eq=False)
class _Outcome:
    """What the inference thread did with a batch: the requests it found expired (not run) and
    its runs, in order."""

    expired: list[_Pending] = field(default_factory=list)
    runs: list[_Run] = field(default_factory=list)


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
        # Wakes the event loop for the inference thread (see _post).
        self._notifier = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}-notify")
        self._closing = False
        self._worker: asyncio.Task | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        # Guards a handed-over batch's members and state between the worker and the thread.
        self._lock = threading.Lock()
        self._jobs: list[_Batch] = []  # handed to the thread, outcome not yet applied
        self._staged: _Batch | None = None  # the last handed over (OPEN: not taken yet)
        self._collecting: list[_Pending] = []  # the batch the worker is gathering now
        self._compute = RecentDurations()  # one batch's compute time, recent median
        self._row_compute = RecentDurations()  # compute time per row, recent median
        self._failures = 0  # execution failures in a row
        self._inline_key: tuple | None = None  # shape of the last run short enough to inline
        self.failed_reason = ""  # set once the version is marked failed

    @property
    def depth(self) -> int:
        """Requests waiting: those queued plus those of the batch handed to the inference thread
        that it has not started yet (it still waits, for the running batch or for the thread).
        """
        staged = self._staged
        waiting_batch = len(staged.members) if staged and staged.state == _OPEN else 0
        return len(self._queue) + len(self._collecting) + waiting_batch

    @property
    def compute_estimate_s(self) -> float:
        """One batch's compute time in seconds (the model run on the inference thread, without
        the hand-over): the median of recent batches (0 before one)."""
        return self._compute.value

    @property
    def row_compute_estimate_s(self) -> float:
        """Compute time per row in seconds: the median over recent batches (0 before one)."""
        return self._row_compute.value

    def start(self) -> None:
        """Start the worker task (on the running event loop); idempotent."""
        if self._worker is None:
            self._event_loop = asyncio.get_running_loop()
            self._worker = self._event_loop.create_task(self._loop())
            # Start the notifier's thread now: started by the first post, the inference thread
            # would wait for the new thread to get the GIL, which a busy event loop can hold.
            self._notifier.submit(threading.get_ident)

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
        """Requests that wait for a batch to finish. With no batch running, the next batch (the
        one handed over, else the head of the queue, up to one batch) is about to run, not
        waiting (so requests that arrive in one burst before the worker wakes are not refused
        with tickets to spare)."""
        staged = self._staged
        waiting_batch = staged is not None and staged.state == _OPEN
        if len(self._jobs) > int(waiting_batch):  # one is on the thread
            return self.depth
        if waiting_batch or self._collecting:
            return len(self._queue)
        return max(0, len(self._queue) - self._max_rows)

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
        self._notifier.shutdown(wait=False)

    def _fail_all(self, error: Exception) -> None:
        """Answer `error` to every queued request and to the batches handed to the thread (one
        it has not started is then skipped)."""
        with self._lock:
            for batch in self._jobs:
                if batch.state == _OPEN:
                    batch.state = _DROPPED
            members = [p for batch in self._jobs for p in batch.members]
        self._jobs, self._staged = [], None
        members += self._collecting
        self._collecting = []
        members += self._queue
        self._queue.clear()
        for pending in members:
            self._settle(pending, error)

    async def _loop(self) -> None:
        while True:
            self._top_up()
            if self._queue and self._may_hand_over():
                try:
                    await self._collect()
                    self._hand_over()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                    log.exception("model %s: batcher error", self._name)
                    for pending in self._collecting:
                        self._settle(pending, exc)
                finally:
                    self._collecting = []
                continue
            if self._closing and not self._queue and not self._jobs:
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    def _may_hand_over(self) -> bool:
        """At most one batch waits for the inference thread: another is collected once the
        thread has taken the last one handed over."""
        staged = self._staged
        return staged is None or staged.state != _OPEN

    async def _collect(self) -> None:
        """Gather into `_collecting` the oldest live request and whatever fits beside it within
        the queue delay."""
        first = self._pop_live()
        if first is None:
            return
        batch = self._collecting = [first]
        rows = first.rows
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

    def _top_up(self) -> None:
        """Requests of its shape that arrived join the batch handed over while the thread has
        not taken it (up to `max_batch_size` rows): it could not have run earlier anyway."""
        batch = self._staged
        if batch is None or batch.state != _OPEN or batch.rows >= self._max_rows:
            return
        if not self._queue:
            return
        with self._lock:
            if batch.state == _OPEN:
                key = batch.members[0].key
                batch.rows += self._take_matching(batch.members, key, self._max_rows - batch.rows)

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
            pending.future.set_exception(self._deadline_error())
            return True
        return False

    def _deadline_error(self) -> DeadlineExceededError:
        return DeadlineExceededError(f"model {self._name}: deadline passed while queued")

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

    def _hand_over(self) -> None:
        """Give the collected batch to the inference thread (queued behind the running one),
        or run a lone fast request inline."""
        if not self._collecting:
            return
        batch = _Batch(self._collecting, sum(p.rows for p in self._collecting))
        if self._runs_inline(batch):
            batch.state = _CLAIMED
            self._finish(batch, self._run_members(batch.members))
            return
        self._executor.submit(self._job, batch)  # _job answers through _job_done, never raises
        self._jobs.append(batch)
        self._staged = batch
        self._collecting = []  # counted in depth as the waiting batch from now on

    def _runs_inline(self, batch: _Batch) -> bool:
        """A lone request of the shape that last ran within `inline_max_ms`, recent runs too,
        with nothing else queued or on the inference thread."""
        return (
            len(batch.members) == 1
            and not self._queue
            and not self._jobs
            and batch.members[0].key == self._inline_key
            and 0 < self._compute.value <= self._inline_max_s
        )

    def _job(self, batch: _Batch) -> None:
        """On the inference thread: take the batch (no more requests join it), drop the requests
        that expired while it waited, run the rest; the outcome goes back to the event loop."""
        try:
            with self._lock:
                if batch.state != _OPEN:  # dropped past the drain timeout: already answered
                    return
                batch.state = _CLAIMED
                members = list(batch.members)
            self._post(self._wakeup.set)  # the worker may hand over the next batch now
            outcome: _Outcome | Exception = self._run_members(members)
        except Exception as exc:  # noqa: BLE001 - the batch's requests must still be answered
            log.exception("model %s: batcher error on the inference thread", self._name)
            outcome = exc
        self._post(self._job_done, batch, outcome)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        """Have `callback(*args)` called on the event loop, from the inference thread.

        The notifier thread wakes the loop: waking it from here would let go of the GIL (the
        write to the loop's self-pipe) between two runs, and with the loop busy in Python this
        thread would then wait for the GIL (up to the 5 ms switch interval) before it could start
        the next batch. Handing it over takes no GIL switch; the notifier runs once this thread
        is inside the model run."""
        try:
            self._notifier.submit(self._call_on_loop, callback, args)
        except RuntimeError:  # shut down: the batcher is closed and every request answered
            log.debug("model %s: closed; %s not posted", self._name, callback.__name__)

    def _call_on_loop(self, callback: Callable[..., object], args: tuple) -> None:
        """On the notifier thread: schedule `callback(*args)` on the event loop."""
        loop = self._event_loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is left to answer
            log.debug("model %s: event loop closed; %s dropped", self._name, callback.__name__)

    def _run_members(self, members: list[_Pending]) -> _Outcome:
        """Run the live members as one batch; requests past their deadline, or already answered
        (a cancelled call: its future is only read here), do not run."""
        now = time.monotonic()
        expired = [
            p for p in members if p.future.done() or (p.deadline is not None and now >= p.deadline)
        ]
        live = [p for p in members if p not in expired]
        return _Outcome(expired, self._run_isolated(live) if live else [])

    def _run_isolated(self, members: list[_Pending]) -> list[_Run]:
        """One run of `members`; when a batch of several fails, one run per request."""
        started = time.monotonic()
        try:
            outputs = self._run_batch(members)
        except Exception as exc:  # noqa: BLE001 - isolate the bad request below
            if len(members) == 1:
                return [_Run(members, started, time.monotonic() - started, error=exc)]
            log.warning(
                "model %s: batch of %d failed (%s); retrying one by one",
                self._name,
                len(members),
                type(exc).__name__,
            )
            return [run for pending in members for run in self._run_isolated([pending])]
        return [_Run(members, started, time.monotonic() - started, outputs)]

    def _job_done(self, batch: _Batch, outcome: _Outcome | Exception) -> None:
        """On the event loop, when the thread finished `batch`: answer its requests."""
        if batch not in self._jobs:  # answered unavailable past the drain timeout
            return
        self._jobs.remove(batch)
        if self._staged is batch:
            self._staged = None
        self._wakeup.set()
        if isinstance(outcome, Exception):
            self._fail_batch(batch, outcome)
            return
        self._finish(batch, outcome)

    def _finish(self, batch: _Batch, outcome: _Outcome) -> None:
        """Answer the expired requests, then apply each run in order."""
        try:
            for pending in outcome.expired:
                self._settle(pending, self._deadline_error())
            for run in outcome.runs:
                self._apply(run)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets an answer
            log.exception("model %s: batcher error", self._name)
            self._fail_batch(batch, exc)

    def _fail_batch(self, batch: _Batch, error: Exception) -> None:
        for pending in batch.members:
            self._settle(pending, error)

    def _apply(self, run: _Run) -> None:
        """Account for one run (estimates, failures in a row) and answer its requests."""
        if run.error is not None:
            self._settle(run.members[0], self._failure(run.error))
            return
        self._failures = 0
        self._compute.add(run.compute_s)
        fast = len(run.members) == 1 and run.compute_s <= self._inline_max_s
        self._inline_key = run.members[0].key if fast else None
        self._row_compute.add(run.compute_s / max(1, sum(p.rows for p in run.members)))
        outputs = run.outputs if run.outputs is not None else {}
        self._deliver(run.members, outputs, run.started, run.compute_s)

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
