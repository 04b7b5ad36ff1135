"""With `batching.inline_max_ms`, a lone request of a model that runs that fast runs on the
event-loop thread; anything else (a slow model, a new shape, a batch of several, or the option
left at 0, the default) keeps the inference thread."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.batcher import DynamicBatcher
from vision.config import BatchingSpec
from vision.errors import InvalidInputError

# Generous, so that a hop to the inference thread on a loaded machine still counts as fast (the
# config allows at most 5 ms; the batcher itself takes any bound).
INLINE_S = 0.2


def _spec(max_batch_size: int = 8, delay_ms: float = 0.0, inline_s: float = INLINE_S):
    return BatchingSpec(max_batch_size, delay_ms, 64, inline_max_ms=inline_s * 1000.0)


class Model:
    """Doubles its input, records the thread of every run, rejects negative rows."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.threads: list[int] = []
        self.batches: list[int] = []

    def __call__(self, feeds):
        self.threads.append(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        x = feeds["x"]
        self.batches.append(x.shape[0])
        if (x < 0).any():
            raise InvalidInputError("negative input")
        return {"y": x * 2}


def _feeds(value: float, width: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.full((1, width), value, dtype=np.float32)}


async def _lone(batcher: DynamicBatcher, values, width: int = 4) -> list:
    return [await batcher.submit(_feeds(v, width)) for v in values]


def test_a_fast_model_runs_lone_requests_on_the_loop_after_its_first_run():
    model = Model()

    async def main():
        batcher = DynamicBatcher(model, _spec(), "m")
        batcher.start()
        results = await _lone(batcher, range(4))
        await batcher.close()
        return threading.get_ident(), results

    loop_thread, results = asyncio.run(main())
    assert model.threads[0] != loop_thread  # first run: no estimate yet, inference thread
    assert model.threads[1:] == [loop_thread] * 3
    assert [float(r.outputs["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]


def test_a_slow_model_keeps_the_inference_thread():
    model = Model(delay=1.5 * INLINE_S)

    async def main():
        batcher = DynamicBatcher(model, _spec(), "m")
        batcher.start()
        await _lone(batcher, range(3))
        await batcher.close()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert loop_thread not in model.threads


def test_a_new_shape_goes_to_the_inference_thread_first():
    model = Model()

    async def main():
        batcher = DynamicBatcher(model, _spec(), "m")
        batcher.start()
        await _lone(batcher, range(3))
        await _lone(batcher, [5.0], width=8)  # another per-row shape: its cost is unknown
        await batcher.close()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert model.threads[-1] != loop_thread


def test_concurrent_requests_are_batched_on_the_inference_thread():
    model = Model()

    async def main():
        batcher = DynamicBatcher(model, _spec(delay_ms=20.0), "m")
        batcher.start()
        await _lone(batcher, range(3))
        results = await asyncio.gather(*(batcher.submit(_feeds(i)) for i in range(6)))
        await batcher.close()
        return threading.get_ident(), results

    loop_thread, results = asyncio.run(main())
    assert model.batches[-1] == 6 and model.threads[-1] != loop_thread
    assert all(r.batch_size == 6 for r in results)


def test_an_input_error_on_the_loop_fails_only_its_request():
    model = Model()

    async def main():
        batcher = DynamicBatcher(model, _spec(), "m")
        batcher.start()
        await _lone(batcher, range(3))
        with pytest.raises(InvalidInputError):
            await batcher.submit(_feeds(-1.0))
        after = await batcher.submit(_feeds(7.0))
        await batcher.close()
        return threading.get_ident(), after

    loop_thread, after = asyncio.run(main())
    assert model.threads[-2] == loop_thread  # the bad request did run inline
    assert float(after.outputs["y"][0, 0]) == 14.0


def test_off_by_default_every_run_keeps_the_inference_thread():
    model = Model()

    async def main():
        batcher = DynamicBatcher(model, BatchingSpec(8, 0.0, 64), "m")
        batcher.start()
        await _lone(batcher, range(4))
        await batcher.close()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(model.threads) == 4 and loop_thread not in model.threads
