"""Admission: how many requests per model may be decoding, queued or computing, decided first.

A request is admitted (or refused) before any decode or other work it would cost. Each model
has a gate of `limit` tickets, by default its batch queue plus one batch
(`batching.max_queue_size + batching.max_batch_size`): beyond that the batcher would refuse it
anyway, after the decode was paid for. A request is also refused when its deadline cannot be
met: the gate estimates the time to an answer from what it measured (decode and preprocess,
postprocess, and the batcher's compute time per batch) and the number of requests ahead.

Transports whose clients can retry elsewhere (vision.v1 unary calls, KServe) are refused at
once with `OverloadedError` (RESOURCE_EXHAUSTED, with a retry hint); internal callers and
flow-controlled streams (the DICOM node, Inspect) wait for a ticket instead, in arrival order,
bounded by their deadline. Once the server begins shutting down, every new request is refused
with `ShuttingDownError` (UNAVAILABLE) and `wait_idle` lets the drain wait for the admitted ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.batcher import RecentDurations
from vision.errors import DeadlineExceededError, ModelUnavailableError, QueueFullError

if TYPE_CHECKING:
    from serving.repository import ModelVersion

# An estimate is a median of what was measured: admit only when it fits in this share of the
# time left, so that a slower batch than usual still answers before the deadline.
DEADLINE_SHARE = 0.8

__all__ = [
    "Admission",
    "Intake",
    "ModelGate",
    "OverloadedError",
    "ShuttingDownError",
    "Ticket",
]


class OverloadedError(QueueFullError):
    """Refused before any work: the model has too many requests admitted, or the deadline
    cannot be met. RESOURCE_EXHAUSTED; the message says when to retry, and `retry_after_ms`
    too (gRPC trailer `grpc-retry-pushback-ms`, HTTP `Retry-After`)."""

    def __init__(self, message: str, retry_after_ms: int = 0) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class ShuttingDownError(ModelUnavailableError):
    """The server is draining for shutdown and takes no new requests (UNAVAILABLE)."""


class ModelGate:
    """The tickets of one model, with what it measured to estimate a request's wait."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.limit = 1  # places: set from the model's batching at each admission
        self.admitted = 0  # places held: decoding, queued, computing or postprocessing
        self.ahead = 0  # rows of those not yet through the batcher
        self.prepare = RecentDurations()  # decode + preprocess, per request
        self.finish = RecentDurations()  # postprocess, per request
        self._waiters: collections.deque[tuple[asyncio.Future, int]] = collections.deque()

    def fits(self, places: int) -> bool:
        """Whether `places` more fit now, with nobody waiting ahead (waiters are served in
        arrival order: a volume waiting for many places is not overtaken by single images)."""
        return not self._waiters and self.admitted + places <= self.limit

    def estimate_s(self, model: ModelVersion, rows: int = 1) -> float:
        """Seconds to an answer for a request of `rows` admitted now, from the measurements."""
        batching = model.config.batching
        per_batch = max(1, batching.max_batch_size)
        batches = math.ceil((self.ahead + rows) / per_batch)
        delay = batching.max_queue_delay_ms / 1000.0
        by_batch = batches * (model.batcher.compute_estimate_s + delay)
        # Recent batches may have been smaller than those ahead will be: their cost per row
        # bounds the estimate from below too.
        by_row = (self.ahead + rows) * model.batcher.row_compute_estimate_s
        return self.prepare.value + max(by_batch, by_row) + self.finish.value

    def retry_hint_ms(self, model: ModelVersion) -> int:
        """A retry-after hint: about one batch's compute time (at least 10 ms)."""
        return max(10, round(model.batcher.compute_estimate_s * 1000.0))

    def release(self, places: int) -> None:
        """Give back `places`, then admit the oldest live waiters they make room for."""
        self.admitted -= places
        while self._waiters:
            waiter, wanted = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if self.admitted + wanted > self.limit:
                return
            self._waiters.popleft()
            self.admitted += wanted
            waiter.set_result(None)

    def refuse_waiters(self, error: Exception) -> None:
        """Wake every waiter with `error` (shutdown)."""
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)


@dataclass
class Ticket:
    """One admitted request; the data plane reports its stages so the estimates stay current."""

    gate: ModelGate
    rows: int
    places: int = 1
    through_batcher: bool = False

    def prepared(self, seconds: float) -> None:
        """Decode and preprocess took `seconds` (their own work, not the wait for a worker)."""
        self.gate.prepare.add(seconds)

    def computed(self) -> None:
        """The batcher answered: the request no longer holds a place ahead of others."""
        if not self.through_batcher:
            self.through_batcher = True
            self.gate.ahead -= self.rows

    def finished(self, seconds: float) -> None:
        """Postprocessing took `seconds`."""
        self.gate.finish.add(seconds)


class Admission:
    """Every model's gate, the server-wide count of admitted requests, and the drain."""

    def __init__(self, limit: int = 0) -> None:
        """`limit`: tickets per model; 0 sizes each gate from its model's batching settings."""
        self._limit = limit
        self._gates: dict[str, ModelGate] = {}
        self._closing = False
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    def limit_for(self, model: ModelVersion) -> int:
        """The number of tickets `model` has."""
        if self._limit > 0:
            return self._limit
        batching = model.config.batching
        return max(1, batching.max_queue_size) + max(1, batching.max_batch_size)

    def gate(self, name: str) -> ModelGate:
        """The gate of model `name` (made at first use; it outlives reloads)."""
        if name not in self._gates:
            self._gates[name] = ModelGate(name)
        return self._gates[name]

    @contextlib.asynccontextmanager
    async def ticket(
        self,
        model: ModelVersion,
        deadline: float | None,
        shed: bool,
        rows: int = 1,
        places: int = 1,
    ) -> AsyncIterator[Ticket]:
        """Hold `places` of `model`'s tickets while the block runs; refuse or wait when they
        are not free.

        `shed`: refuse at once (OverloadedError) when the gate is full; otherwise wait in
        arrival order until the places are free or `deadline` passes (DeadlineExceededError).
        `rows`: the rows it puts ahead of later requests. A volume takes the places of the
        windows it keeps in flight (`serving.volumes.windows_in_flight`).
        """
        gate = self.gate(model.name)
        places = max(1, min(places, self.limit_for(model)))
        await self._acquire(gate, model, deadline, shed, rows, places)
        ticket = Ticket(gate, rows, places)
        gate.ahead += rows
        try:
            yield ticket
        finally:
            ticket.computed()
            self._release(gate, places)

    def settle(
        self, ticket: Ticket, model: ModelVersion, deadline: float | None, rows: int
    ) -> None:
        """An admitted request's rows and deadline, once its body is read (KServe REST admits
        before reading it): OverloadedError when the requests ahead leave no time to answer."""
        gate = ticket.gate
        gate.ahead -= ticket.rows
        ticket.rows = rows
        try:
            self._check_deadline(gate, model, deadline, rows)
        finally:
            gate.ahead += rows

    async def _acquire(
        self,
        gate: ModelGate,
        model: ModelVersion,
        deadline: float | None,
        shed: bool,
        rows: int,
        places: int,
    ) -> None:
        if self._closing:
            raise ShuttingDownError("the server is shutting down; retry on another replica")
        self._check_deadline(gate, model, deadline, rows)
        gate.limit = self.limit_for(model)
        depth = model.batcher.depth
        if shed and depth >= model.config.batching.max_queue_size and gate.ahead > depth:
            # Batches smaller than max_batch_size leave places free while the batch queue is
            # full behind a running batch: this request would be refused there, after its
            # decode was paid for. (A queue the worker has not yet taken a batch from, with
            # nothing else ahead, is about to drain: that one is not refused.)
            hint = gate.retry_hint_ms(model)
            raise OverloadedError(
                f"model {model.name} is at capacity (its batch queue is full); retry after "
                f"{hint} ms with backoff, or on another replica",
                hint,
            )
        if gate.fits(places):
            gate.admitted += places
        elif shed:
            hint = gate.retry_hint_ms(model)
            raise OverloadedError(
                f"model {model.name} is at capacity ({gate.admitted} of {gate.limit} places "
                f"held); retry after {hint} ms with backoff, or on another replica",
                hint,
            )
        else:
            await self._wait(gate, deadline, places)
        self.in_flight += 1
        if self._idle is not None:
            self._idle.clear()

    @property
    def closing(self) -> bool:
        """Whether the server began shutting down (every new request is refused)."""
        return self._closing

    def deadline_fits(self, model: ModelVersion, deadline: float, rows: int = 1) -> bool:
        """Whether a request of `rows` for `model` admitted now could meet `deadline`, as
        admission would judge it (always, with nothing ahead: see `_check_deadline`)."""
        gate = self.gate(model.name)
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        return gate.ahead == 0 or gate.estimate_s(model, rows) <= DEADLINE_SHARE * left

    def _check_deadline(
        self, gate: ModelGate, model: ModelVersion, deadline: float | None, rows: int
    ) -> None:
        if deadline is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError(f"model {model.name}: the deadline passed before admission")
        if gate.ahead == 0:
            # Nothing queued ahead: the wait would be this request's own work. Admitting it
            # also keeps the measurements current, so stale estimates never lock the gate.
            return
        needed = gate.estimate_s(model, rows)
        if needed > DEADLINE_SHARE * left:
            hint = gate.retry_hint_ms(model)
            raise OverloadedError(
                f"model {model.name}: an answer needs about {needed * 1000:.0f} ms "
                f"({gate.ahead} requests ahead) but the deadline leaves {left * 1000:.0f} ms; "
                f"retry after {hint} ms or with a longer deadline",
                hint,
            )

    async def _wait(self, gate: ModelGate, deadline: float | None, places: int) -> None:
        waiter = asyncio.get_running_loop().create_future()
        gate._waiters.append((waiter, places))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                gate.release(places)  # admitted just as the deadline passed
            raise DeadlineExceededError(
                f"model {gate.name}: the deadline passed while waiting for admission"
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                gate.release(places)  # admitted just as we were cancelled
            raise

    def _release(self, gate: ModelGate, places: int) -> None:
        gate.release(places)
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def begin_shutdown(self) -> None:
        """Refuse every new request from now on (UNAVAILABLE), waiting ones included."""
        self._closing = True
        error = ShuttingDownError("the server is shutting down; retry on another replica")
        for gate in self._gates.values():
            gate.refuse_waiters(error)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no admitted request is left (at most `timeout` s); whether none is."""
        if self.in_flight == 0:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return self.in_flight == 0
        return True

    def snapshot(self) -> dict[str, int]:
        """Tickets held per model (for tests and the metrics)."""
        return {name: gate.admitted for name, gate in sorted(self._gates.items())}


class Intake:
    """A server-wide bound on calls held before their model is known: gRPC ModelInfer calls
    whose message is being received, parsed, admitted or served.

    The model a ModelInfer names is inside its message, so a per-model gate can only refuse it
    after the whole message (2 MB for one 416x416 FP32 image) has been received and parsed. The
    intake refuses before that: a call takes a place here first (`take`), before its message
    is read, and gives it back when it is answered (`release`). Its limit is the sum of the
    places of the models that serve (`Admission.limit_for` of each: a server with one model
    refuses here exactly when that model's gate would), or a fixed number of calls when given.
    Refused at once (OverloadedError, with the models' retry hint) when every place is held,
    when the deadline cannot be met on any model (`Admission.deadline_fits`), or while the
    server shuts down.

    It cannot tell models apart before the read: with several models, one model's calls can
    hold the places another model's calls would need. Once a call's message is read, `assign`
    records its model, so a refusal says which models hold the places (`holders`).
    """

    def __init__(
        self,
        admission: Admission,
        versions: Callable[[], Sequence[ModelVersion]],
        limit: int = 0,
    ) -> None:
        """`versions`: the latest version of each model that serves now; `limit`: calls held
        at once (0: the sum of those models' places)."""
        self._admission = admission
        self._versions = versions
        self._limit = limit
        self.held = 0
        self._by_model: collections.Counter[str] = collections.Counter()

    def limit_for(self, versions: Sequence[ModelVersion]) -> int:
        """Calls that may be held at once with `versions` serving (at least one, so that a call
        naming no loaded model is read and told why)."""
        if self._limit > 0:
            return self._limit
        return max(1, sum(self._admission.limit_for(v) for v in versions))

    def take(self, deadline: float | None) -> frozenset[str]:
        """Take one place, or refuse (before the message is read) when none is free; the
        caller gives it back with `release` once the call is answered. Returns the names of
        the models serving when it was taken, for `assign` (one listing per call)."""
        versions = self._check(deadline)
        self.held += 1
        return frozenset(v.name for v in versions)

    def assign(self, model: str, serving: Collection[str] | None = None) -> str:
        """Record that a place's message, now read, names `model`; returns the key to give
        `release` (a model that does not serve is counted as OTHER: a client's made-up name
        never reaches another client's refusal). `serving`: what `take` returned (default:
        the models serving now)."""
        if serving is None:
            serving = {v.name for v in self._versions()}
        key = model if model in serving else OTHER
        self._by_model[key] += 1
        return key

    def release(self, assigned: str | None = None) -> None:
        """Give back a place taken by `take` (`assigned`: what `assign` returned for it)."""
        self.held -= 1
        if assigned is not None:
            self._by_model[assigned] -= 1
            if self._by_model[assigned] <= 0:
                del self._by_model[assigned]

    def holders(self) -> dict[str, int]:
        """Places held per model whose message was read, most first, and those whose message
        is still being read (READING)."""
        counts = dict(self._by_model.most_common())
        reading = self.held - sum(counts.values())
        return counts | ({READING: reading} if reading > 0 else {})

    def _check(self, deadline: float | None) -> Sequence[ModelVersion]:
        """The versions serving now, or the refusal of a call that cannot be taken."""
        admission = self._admission
        if admission.closing:
            raise ShuttingDownError("the server is shutting down; retry on another replica")
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceededError("the deadline passed before the request was read")
        versions = self._versions()
        limit = self.limit_for(versions)
        if self.held >= limit:
            hint = _retry_hint_ms(admission, versions)
            raise OverloadedError(
                f"the server is at capacity ({self.held} of {limit} inference calls held: "
                f"{_holders_text(self.holders())}); retry after {hint} ms with backoff, or on "
                "another replica",
                hint,
            )
        fits = (admission.deadline_fits(v, deadline) for v in versions)
        if deadline is not None and versions and not any(fits):
            hint = _retry_hint_ms(admission, versions)
            left_ms = (deadline - time.monotonic()) * 1000.0
            raise OverloadedError(
                f"no model can answer in the {left_ms:.0f} ms the deadline leaves "
                f"({self.held} inference calls held); retry after {hint} ms or with a longer "
                "deadline",
                hint,
            )
        return versions


OTHER = "(a model not serving)"  # Intake.holders: calls naming no model that serves
READING = "(being read)"  # Intake.holders: calls whose message is not read yet
_HOLDERS_SHOWN = 4


def _holders_text(holders: dict[str, int]) -> str:
    """'blood-cells 70, (being read) 2' (the first few holders, then how many more)."""
    shown = [f"{name} {count}" for name, count in list(holders.items())[:_HOLDERS_SHOWN]]
    more = len(holders) - _HOLDERS_SHOWN
    return ", ".join(shown + ([f"{more} more"] if more > 0 else []))


def _retry_hint_ms(admission: Admission, versions: Sequence[ModelVersion]) -> int:
    """The soonest any model's gate expects a place back (its retry hint)."""
    if not versions:
        return 10
    return min(admission.gate(v.name).retry_hint_ms(v) for v in versions)
