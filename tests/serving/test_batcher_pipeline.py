"""Pipelined batches: while one batch runs, the next is already handed to the inference thread,
which starts it the moment the first ends, without an event-loop round trip. Expiry, failure
isolation, the queue bounds and draining hold with two batches in flight."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.batcher import FAILURES_TO_MARK, DynamicBatcher, ExecutionFailedError
from vision.config import BatchingSpec
from vision.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelUnavailableError,
    QueueFullError,
)

# Generous bounds: a loaded CI machine may delay any thread by a good fraction of a second.
WAIT_S = 20.0


def _feeds(value: float, rows: int = 1, width: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, dtype=np.float32)}


class GatedModel:
    """Doubles its input; the first run waits for `gate`. Records each run's rows and its start
    and end (monotonic). Negative input is a bad request; `broken` makes every run raise an
    execution failure."""

    def __init__(self, broken: bool = False) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.broken = broken
        self.batches: list[int] = []
        self.spans: list[tuple[float, float]] = []

    def __call__(self, feeds):
        started = time.monotonic()
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
        x = feeds["x"]
        self.batches.append(x.shape[0])
        self.spans.append((started, time.monotonic()))
        if self.broken:
            raise RuntimeError("execution provider fault")
        if (x < 0).any():
            raise InvalidInputError("negative input")
        return {"y": x * 2}


async def _until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _handed_over(batcher: DynamicBatcher, jobs: int) -> bool:
    """`jobs` batches are on the inference thread or waiting in its queue."""
    return len(batcher._jobs) == jobs


async def _first_running(batcher: DynamicBatcher, model: GatedModel, value: float = 1.0):
    """Submit one request and wait until its run holds the (gated) inference thread."""
    running = asyncio.ensure_future(batcher.submit(_feeds(value)))
    await _until(model.entered.is_set, "the first run")
    return running


def test_the_next_batch_starts_while_the_event_loop_is_blocked():
    """Delivering batch 1 blocks the loop for 2 s (a synchronous sleep in the observer): batch
    2 was handed over during batch 1, so the thread starts it at once regardless."""
    model = GatedModel()
    blocked_s = 2.0
    delivered: list[int] = []

    def observer(stats) -> None:
        delivered.append(stats.size)
        if len(delivered) == 1:
            time.sleep(blocked_s)  # the event loop is stuck right after batch 1 completes

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 0.0, 64), "m", observer)
        batcher.start()
        first = await _first_running(batcher, model)
        second = asyncio.ensure_future(batcher.submit(_feeds(2.0)))
        await _until(lambda: _handed_over(batcher, 2), "the second batch handed over")
        model.gate.set()
        results = await asyncio.gather(first, second)
        await batcher.close()
        return results

    first, second = asyncio.run(main())
    (_, first_end), (second_start, _) = model.spans
    assert second_start - first_end < blocked_s / 2  # not after the loop came back
    assert np.allclose(first.outputs["y"], 2) and np.allclose(second.outputs["y"], 4)


def test_requests_arriving_while_a_batch_runs_join_the_batch_handed_over():
    """The waiting batch keeps taking requests of its shape until the thread takes it (up to
    max_batch_size rows), so batches are no smaller than when collected after the run."""
    model = GatedModel()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 0.0, 64), "m")
        batcher.start()
        first = await _first_running(batcher, model)
        later = []
        for i in range(6):  # one at a time, the batch handed over after the first arrival
            later.append(asyncio.ensure_future(batcher.submit(_feeds(10 + i))))
            await _until(lambda n=i + 1: batcher.depth == n, "the arrival queued")
        assert batcher.depth == 6  # handed over (4) and queued (2): all still waiting
        model.gate.set()
        results = await asyncio.gather(first, *later)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert model.batches == [1, 4, 2]
    assert [float(r.outputs["y"][0, 0]) for r in results[1:]] == [2.0 * (10 + i) for i in range(6)]
    assert [r.batch_size for r in results[1:]] == [4, 4, 4, 4, 2, 2]


def test_the_oldest_request_sets_the_shape_of_the_next_batch():
    model = GatedModel()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 0.0, 64), "m")
        batcher.start()
        first = await _first_running(batcher, model)
        narrow = asyncio.ensure_future(batcher.submit(_feeds(2.0, width=4)))
        await _until(lambda: _handed_over(batcher, 2), "the narrow batch handed over")
        wide = asyncio.ensure_future(batcher.submit(_feeds(3.0, width=5)))
        narrow_too = asyncio.ensure_future(batcher.submit(_feeds(4.0, width=4)))
        await _until(lambda: batcher.depth == 3, "both queued")
        model.gate.set()
        results = await asyncio.gather(first, narrow, wide, narrow_too)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert model.batches == [1, 2, 1]  # the two narrow ones together, then the wide one
    assert results[2].outputs["y"].shape == (1, 5) and results[3].batch_size == 2


def test_expiry_is_checked_again_on_the_thread_before_the_run():
    """A request whose deadline passes while its batch waits for the thread is answered
    DeadlineExceeded without running; the live request of the same batch runs alone."""
    model = GatedModel()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 0.0, 64), "m")
        batcher.start()
        first = await _first_running(batcher, model)
        short = asyncio.ensure_future(batcher.submit(_feeds(2.0), deadline=time.monotonic() + 0.3))
        live = asyncio.ensure_future(batcher.submit(_feeds(3.0)))
        await _until(lambda: _handed_over(batcher, 2) and batcher.depth == 2, "one batch of two")
        deadline = time.monotonic() + 0.3
        await _until(lambda: time.monotonic() > deadline + 0.05, "the short deadline passed")
        model.gate.set()
        outcomes = await asyncio.gather(first, short, live, return_exceptions=True)
        await batcher.close()
        return outcomes

    first, short, live = asyncio.run(main())
    assert isinstance(short, DeadlineExceededError)
    assert model.batches == [1, 1]  # the expired row was dropped from the waiting batch
    assert np.allclose(live.outputs["y"], 6) and live.batch_size == 1


def test_a_bad_request_fails_alone_with_two_batches_in_flight():
    model = GatedModel()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 50.0, 64), "m")
        batcher.start()
        first = await _first_running(batcher, model)  # batch 1 holds the thread
        batch_2 = [asyncio.ensure_future(batcher.submit(_feeds(v))) for v in (2.0, -1.0, 4.0)]
        await _until(lambda: _handed_over(batcher, 2), "batch 2 handed over")
        model.gate.set()
        outcomes = await asyncio.gather(first, *batch_2, return_exceptions=True)
        after = await batcher.submit(_feeds(5.0))
        await batcher.close()
        return outcomes, after, batcher.failed_reason

    (first, good, bad, other), after, failed_reason = asyncio.run(main())
    assert isinstance(bad, InvalidInputError) and not failed_reason
    assert np.allclose(good.outputs["y"], 4) and np.allclose(other.outputs["y"], 8)
    assert model.batches == [1, 3, 1, 1, 1, 1]  # batch 2 failed, then one by one
    assert np.allclose(after.outputs["y"], 10)


def test_execution_failures_across_two_batches_mark_the_version_failed():
    model = GatedModel(broken=True)

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 50.0, 64), "m")
        batcher.start()
        first = await _first_running(batcher, model)
        waiting = [asyncio.ensure_future(batcher.submit(_feeds(v))) for v in (2.0, 3.0)]
        await _until(lambda: _handed_over(batcher, 2), "batch 2 handed over")
        model.gate.set()
        outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
        with pytest.raises(ExecutionFailedError, match="marked failed"):
            await batcher.submit(_feeds(6.0))
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert all(isinstance(o, ExecutionFailedError) for o in outcomes), outcomes
    assert len(outcomes) == FAILURES_TO_MARK  # 1 + the 2 of batch 2 retried one by one


def test_the_waiting_batch_counts_against_the_queue_bound():
    model = GatedModel()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(2, 0.0, 3), "m")
        batcher.start()
        first = await _first_running(batcher, model)
        waiting = [asyncio.ensure_future(batcher.submit(_feeds(i))) for i in (2, 3, 4)]
        await _until(lambda: _handed_over(batcher, 2) and batcher.depth == 3, "3 waiting")
        with pytest.raises(QueueFullError):
            await batcher.submit(_feeds(5))
        model.gate.set()
        results = await asyncio.gather(first, *waiting)
        await batcher.close()
        return results

    assert len(asyncio.run(main())) == 4
    assert model.batches == [1, 2, 1]


def test_close_drains_the_running_the_waiting_and_the_queued():
    model = GatedModel()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(2, 0.0, 64), "m")
        batcher.start()
        first = await _first_running(batcher, model)
        rest = [
            asyncio.ensure_future(batcher.submit(_feeds(i, width=w)))
            for i, w in ((2, 4), (3, 5), (4, 4))
        ]
        await _until(lambda: _handed_over(batcher, 2) and batcher.depth == 3, "all waiting")
        closing = asyncio.ensure_future(batcher.close(drain_timeout=WAIT_S))
        await asyncio.sleep(0)
        with pytest.raises(ModelUnavailableError):
            await batcher.submit(_feeds(9))
        model.gate.set()
        await closing
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    assert [float(r.outputs["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0, 8.0]
    assert sorted(model.batches) == [1, 1, 2]


def test_past_the_drain_timeout_the_waiting_batch_never_runs():
    model = GatedModel()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(2, 0.0, 64), "m")
        batcher.start()
        first = await _first_running(batcher, model)
        waiting = asyncio.ensure_future(batcher.submit(_feeds(2)))
        queued = asyncio.ensure_future(batcher.submit(_feeds(3, width=5)))
        await _until(lambda: _handed_over(batcher, 2) and batcher.depth == 2, "both waiting")
        await batcher.close(drain_timeout=0.2)
        outcomes = await asyncio.gather(first, waiting, queued, return_exceptions=True)
        model.gate.set()
        await asyncio.get_running_loop().run_in_executor(None, batcher._executor.shutdown, True)
        return outcomes

    outcomes = asyncio.run(main())
    assert all(isinstance(o, ModelUnavailableError) for o in outcomes), outcomes
    assert model.batches == [1]  # the batch handed over was dropped, not run after all


def test_many_concurrent_requests_each_get_their_own_answer_once():
    """Mixed shapes, bad inputs and short deadlines arriving while batches run: every request is
    answered, with its own rows, and each answered one was in exactly one run that answered."""
    ran: list[float] = []
    lock = threading.Lock()

    def model(feeds):
        x = feeds["x"]
        time.sleep(0.002)
        if (x < 0).any():
            raise InvalidInputError("negative input")
        with lock:  # the rows of each run that answers
            ran.extend(float(v) for v in x[:, 0])
        return {"y": x * 2}

    async def one(batcher: DynamicBatcher, i: int):
        value = -float(i) if i % 17 == 0 else float(i)
        deadline = time.monotonic() + 0.001 if i % 23 == 0 else None
        await asyncio.sleep((i % 7) * 0.001)
        return await batcher.submit(_feeds(value, width=4 + i % 2), deadline)

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 1.0, 1000), "m")
        batcher.start()
        outcomes = await asyncio.gather(
            *(one(batcher, i) for i in range(1, 301)), return_exceptions=True
        )
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(main())
    for i, outcome in enumerate(outcomes, start=1):
        if i % 17 == 0:
            assert isinstance(outcome, InvalidInputError), (i, outcome)
        elif isinstance(outcome, DeadlineExceededError):
            assert i % 23 == 0, i
        else:
            assert not isinstance(outcome, BaseException), (i, outcome)
            assert outcome.outputs["y"].shape == (1, 4 + i % 2)
            assert float(outcome.outputs["y"][0, 0]) == 2.0 * i
    answered = [i for i, o in enumerate(outcomes, start=1) if not isinstance(o, BaseException)]
    assert sorted(ran) == [float(i) for i in answered]  # each answered request ran once
