"""The served volume path with slabs postprocessed while windows run (`serving.volumes`),
over a stand-in batcher that answers windows out of order: the masks equal the one-shot
postprocess bit for bit, and a failing window still fails the call cleanly."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from serving.volumes import segment_volume
from vision.config import BatchingSpec, InputSpec, ModelConfig, PostprocessSpec, VolumeSpec
from vision.errors import InvalidInputError
from vision.volume.pipeline import VolumePipeline
from vision.volume.types import Volume
from vision.volume.window import Blender, pad_to_patch, plan_windows

PATCH = (8, 16, 12)


def _config() -> ModelConfig:
    return ModelConfig(
        name="slabs",
        task="volumetric_segmentation",
        labels=("background", "organ"),
        input=InputSpec(name="volume", layout="NCDHW", channels=1),
        postprocess=PostprocessSpec(type="argmax"),
        batching=BatchingSpec(max_batch_size=2, max_queue_size=8),
        volume=VolumeSpec(
            spacing_mm=(2.0, 1.5, 1.5), patch=PATCH, overlap=0.25, normalisation="none"
        ),
    )


def _logits(window: np.ndarray) -> np.ndarray:
    """Two smooth 'class' logits [1, 2, *patch] from a window [1, 1, *patch]."""
    smooth = ndimage.gaussian_filter(window[0, 0], 1.0)
    return np.stack([np.float32(0.5) - smooth, smooth - np.float32(0.5)])[None] * 6


class _Batcher:
    """Answers each window after a few event-loop turns that vary by window (out of order);
    `fail_at`: the window (by call order) that fails."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at

    async def submit(self, inputs: dict, deadline) -> SimpleNamespace:
        index = self.calls
        self.calls += 1
        for _ in range((index * 7) % 5):
            await asyncio.sleep(0)
        if index == self.fail_at:
            raise InvalidInputError("window failed on purpose")
        outputs = {"logits": _logits(np.ascontiguousarray(inputs["volume"]))}
        return SimpleNamespace(outputs=outputs, queue_s=0.0, compute_s=0.001, batch_size=1)


def _model(batcher: _Batcher) -> SimpleNamespace:
    return SimpleNamespace(name="slabs", version="1", config=_config(), batcher=batcher)


async def _in_thread(function, *args):
    return await asyncio.to_thread(function, *args)


def _volume() -> Volume:
    rng = np.random.default_rng(11)
    voxels = ndimage.gaussian_filter(rng.random((41, 30, 26)), 2.0).astype(np.float32)
    voxels = (voxels - voxels.mean()) / voxels.std() * 0.3 + 0.5
    return Volume(voxels=voxels.astype(np.float32), spacing_mm=(2.0, 1.0, 1.0))


def _one_shot(volume: Volume, order: list | None = None):
    """The one-shot path, the windows blended in `order` (float32 sums depend on it)."""
    pipeline = VolumePipeline(_config())
    tensor, meta = pipeline.preprocess(volume)
    padded, pad = pad_to_patch(tensor, PATCH)
    blender = Blender(1, padded.shape[1:], PATCH)
    for window in order or plan_windows(padded.shape[1:], PATCH, 0.25):
        logits = _logits(np.ascontiguousarray(padded[(slice(None), *window)][None]))[0]
        blender.add_difference(window, logits)
    class1 = pipeline.difference_probability(blender.result(pad))
    return pipeline.postprocess_two_classes(class1, meta), meta


def test_served_slabs_equal_the_one_shot_postprocess(monkeypatch) -> None:
    order: list = []
    original = Blender.add_difference

    def recorded(self, window, logits):
        order.append(window)
        return original(self, window, logits)

    monkeypatch.setattr(Blender, "add_difference", recorded)
    volume = _volume()
    batcher = _Batcher()
    prediction = asyncio.run(segment_volume(_model(batcher), volume, None, _in_thread, 0))
    assert prediction.windows == batcher.calls == len(order)
    starts = [(w[0].start, w[1].start, w[2].start) for w in order]
    assert starts != sorted(starts)  # answered out of order (the plan's is sorted)
    monkeypatch.setattr(Blender, "add_difference", original)
    expected, meta = _one_shot(volume, order)
    assert len({w[0].start for w in plan_windows(meta.model_shape, PATCH, 0.25)}) > 2
    (got,), (want,) = prediction.result.masks, expected.masks
    assert 0 < want.voxel_count < want.mask.size
    assert np.array_equal(got.mask, want.mask)
    assert (got.score, got.voxel_count, got.volume_mm3) == (
        want.score,
        want.voxel_count,
        want.volume_mm3,
    )


def test_served_slabs_took_the_streamed_path(monkeypatch) -> None:
    from vision.volume import pipeline as pipeline_module

    advanced: list[int] = []
    original = pipeline_module.ClassOneSlabs.advance

    def spy(self, difference, final):
        advanced.append(int(final))
        return original(self, difference, final)

    monkeypatch.setattr(pipeline_module.ClassOneSlabs, "advance", spy)
    volume = _volume()
    asyncio.run(segment_volume(_model(_Batcher()), volume, None, _in_thread, 0))
    model_depth = _one_shot(volume)[1].model_shape[0]
    assert len(advanced) >= 3 and advanced[-1] == model_depth
    assert advanced == sorted(advanced) and advanced[0] < model_depth


def test_a_failed_window_fails_the_call_and_leaves_nothing_running() -> None:
    meta = _one_shot(_volume())[1]
    padded = pad_to_patch(np.zeros((1, *meta.model_shape), np.float32), PATCH)[0]
    total = len(plan_windows(padded.shape[1:], PATCH, 0.25))
    batcher = _Batcher(fail_at=total - 3)  # after slabs were released

    async def call() -> None:
        with pytest.raises(InvalidInputError, match="on purpose"):
            await segment_volume(_model(batcher), _volume(), None, _in_thread, 0)
        await asyncio.sleep(0)
        current = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not current] == []

    asyncio.run(call())
    assert batcher.calls == total
