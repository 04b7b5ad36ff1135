"""Dynamic batcher: batching, queue limits, deadlines and failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.batcher import DynamicBatcher
from vision.config import BatchingSpec
from vision.errors import DeadlineExceededError, InvalidInputError, QueueFullError


def _feeds(value: float, rows: int = 1, width: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, dtype=np.float32)}


class Recorder:
    """A model that doubles its input, records batch sizes, and rejects negative rows."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, feeds):
        self.gate.wait(5)
        time.sleep(self.delay)
        x = feeds["x"]
        self.batches.append(x.shape[0])
        if (x < 0).any():
            raise InvalidInputError("negative input")
        return {"y": x * 2}


def _run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_a_batch():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(8, 50.0, 64), "m")
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(_feeds(i)) for i in range(6)))
        await batcher.close()
        return results

    results = _run(main())
    assert model.batches == [6]
    for i, result in enumerate(results):
        assert np.allclose(result.outputs["y"], 2 * i) and result.batch_size == 6


def test_batch_never_exceeds_max_rows_and_keeps_row_order():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(4, 20.0, 64), "m")
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(_feeds(1, rows=3)),
            batcher.submit(_feeds(2, rows=2)),
            batcher.submit(_feeds(3, rows=1)),
        )
        await batcher.close()
        return results

    results = _run(main())
    assert max(model.batches) <= 4 and sum(model.batches) == 6
    assert [r.outputs["y"].shape[0] for r in results] == [3, 2, 1]
    assert np.allclose(results[1].outputs["y"], 4)


def test_different_shapes_are_not_mixed():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(8, 20.0, 64), "m")
        batcher.start()
        await asyncio.gather(batcher.submit(_feeds(1, width=4)), batcher.submit(_feeds(1, width=5)))
        await batcher.close()

    _run(main())
    assert sorted(model.batches) == [1, 1]


def test_one_bad_request_fails_alone():
    model = Recorder()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(8, 50.0, 64), "m")
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(_feeds(1)),
            batcher.submit(_feeds(-1)),
            batcher.submit(_feeds(3)),
            return_exceptions=True,
        )
        await batcher.close()
        return results

    good, bad, other = _run(main())
    assert isinstance(bad, InvalidInputError)
    assert np.allclose(good.outputs["y"], 2) and np.allclose(other.outputs["y"], 6)


def test_full_queue_is_refused_at_once():
    model = Recorder()
    model.gate.clear()  # the model blocks, so requests pile up

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(1, 0.0, 2), "m")
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(_feeds(1)))
        await asyncio.sleep(0)  # submitted
        while batcher.depth != 0:  # first has left the queue for the inference thread
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(batcher.submit(_feeds(i))) for i in (2, 3)]
        while batcher.depth != 2:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(QueueFullError):
            await batcher.submit(_feeds(4))
        refused_in = time.monotonic() - started
        model.gate.set()
        await asyncio.gather(first, *queued)
        await batcher.close()
        return refused_in

    assert _run(main()) < 0.5  # at once: the model is held for seconds


def test_deadline_passed_while_queued():
    model = Recorder(delay=0.2)

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(1, 0.0, 8), "m")
        batcher.start()
        slow = asyncio.ensure_future(batcher.submit(_feeds(1)))
        await asyncio.sleep(0.02)
        late = batcher.submit(_feeds(2), deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceededError):
            await late
        await slow
        await batcher.close()

    _run(main())
    assert model.batches == [1]  # the expired request never ran


def test_close_drains_queued_requests():
    model = Recorder(delay=0.02)

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(1, 0.0, 64), "m")
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(_feeds(i))) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close(drain_timeout=5)
        return await asyncio.gather(*pending)

    assert len(_run(main())) == 5


def test_a_stalled_batch_does_not_skew_the_compute_estimate():
    model = Recorder(delay=0.01)

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(1, 0.0, 64), "m")
        batcher.start()
        for i in range(5):
            await batcher.submit(_feeds(i))
        typical = batcher.compute_estimate_s
        model.delay = 1.0  # one run stalls (a slow machine, a GC pause)
        await batcher.submit(_feeds(9))
        model.delay = 0.01
        stalled = batcher.compute_estimate_s
        await batcher.close()
        return typical, stalled

    typical, stalled = _run(main())
    assert 0 < typical < 0.5 and stalled < 0.5  # the median of recent runs, not their mean


def test_past_the_drain_timeout_the_running_batch_is_answered_unavailable():
    from vision.errors import ModelUnavailableError

    model = Recorder()
    model.gate.clear()  # the run never finishes until the test lets it

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(1, 0.0, 64), "m")
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(_feeds(1)))
        queued = asyncio.ensure_future(batcher.submit(_feeds(2)))
        await asyncio.sleep(0)  # both submitted
        while batcher.depth != 1:  # the first has left the queue for the inference thread
            await asyncio.sleep(0.01)
        await batcher.close(drain_timeout=0.2)
        model.gate.set()
        return await asyncio.gather(running, queued, return_exceptions=True)

    outcomes = _run(main())
    assert all(isinstance(o, ModelUnavailableError) for o in outcomes), outcomes


def test_a_model_that_drops_the_batch_dimension_never_mixes_callers():
    """Outputs with one row for a batch of several (a reduce over the batch axis): the batch is
    retried one request at a time, so each caller gets its own row, never another's."""

    def collapsing(feeds):
        x = feeds["x"]
        return {"y": x.sum(axis=0, keepdims=True)}  # one row whatever the batch

    async def main():
        batcher = DynamicBatcher(collapsing, BatchingSpec(8, 50.0, 64), "m")
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(_feeds(i)) for i in range(4)))
        await batcher.close()
        return results

    for i, result in enumerate(_run(main())):
        assert np.allclose(result.outputs["y"], i) and result.outputs["y"].shape == (1, 4)


def test_a_burst_before_the_worker_wakes_fills_the_queue_and_one_batch():
    model = Recorder()
    model.gate.clear()  # held, so nothing finishes while the burst is queued

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(1, 0.0, 2), "m")
        batcher.start()
        # One batch (1 row) about to run plus a full queue (2): all in before the worker runs.
        burst = [asyncio.ensure_future(batcher.submit(_feeds(i))) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        while batcher.depth != 2:  # the worker took the first one
            await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError):
            await batcher.submit(_feeds(4))
        model.gate.set()
        results = await asyncio.gather(*burst)
        await batcher.close()
        return results

    assert len(_run(main())) == 3
