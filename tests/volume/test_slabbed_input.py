"""The model input filled a row of windows at a time while windows run (`SlabbedInput`,
`serving.volumes._SlabFill`): the same tensor as `preprocess`, no window sent before its
slices are filled, mirrored or resampled-across-slices volumes filled in one go as before, and
a failed fill fails the call with nothing left running."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from serving.volumes import segment_volume
from tests.volume.test_integer_voxels import _config as _norm_config
from tests.volume.test_served_slabs import _Batcher, _in_thread, _model, _one_shot, _volume
from vision.volume import pipeline as pipeline_module
from vision.volume.pipeline import SlabbedInput, VolumePipeline
from vision.volume.types import Volume


@pytest.mark.parametrize("normalisation", ["window", "zscore", "zscore_nonzero", "none"])
@pytest.mark.parametrize("stops", [(3, 7, 12), (12,), (1, 2, 5, 5, 12)])
def test_filled_in_slabs_equals_preprocess(normalisation, stops) -> None:
    rng = np.random.default_rng(3)
    voxels = rng.integers(-1000, 1200, size=(12, 40, 36)).astype(np.int16)
    voxels[:, :4] = 0
    volume = Volume(voxels=voxels, spacing_mm=(2.5, 0.7, 0.7))
    pipeline = VolumePipeline(_norm_config(normalisation, (2.5, 1.0, 1.0)))
    slabs = pipeline.slabbed_input(volume)
    assert slabs is not None and slabs.filled == 0
    for stop in stops:
        slabs.fill(stop)
        assert slabs.filled == stop
    tensor, meta = pipeline.preprocess(volume)
    assert slabs.meta == meta and np.array_equal(slabs.tensor, tensor)


@pytest.mark.parametrize("spacing", [(2.0, 1.0, 1.0), (2.5, 0.7, 0.7)])
def test_no_slabs_when_slices_are_resampled_or_not_resized(spacing) -> None:
    volume = Volume(voxels=np.zeros((12, 40, 36), np.int16), spacing_mm=(2.5, 0.7, 0.7))
    assert VolumePipeline(_norm_config("window", spacing)).slabbed_input(volume) is None


def _nan_input(monkeypatch) -> list[int]:
    """Inputs allocated as NaN (a window read before its fill shows it); the fills' stops."""
    stops: list[int] = []
    slabbed, fill = VolumePipeline.slabbed_input, SlabbedInput.fill

    def allocated(self, volume):
        slabs = slabbed(self, volume)
        if slabs is not None:
            slabs.tensor[...] = np.nan
        return slabs

    def recorded(self, depth):
        stops.append(depth)
        return fill(self, depth)

    monkeypatch.setattr(VolumePipeline, "slabbed_input", allocated)
    monkeypatch.setattr(SlabbedInput, "fill", recorded)
    return stops


class _Checking(_Batcher):
    async def submit(self, inputs: dict, deadline):
        assert not np.isnan(inputs["volume"]).any(), "a window was sent before its slices"
        return await super().submit(inputs, deadline)


def test_windows_wait_for_their_slices_and_masks_are_unchanged(monkeypatch) -> None:
    volume = _volume()
    expected, meta = _one_shot(volume)
    stops = _nan_input(monkeypatch)
    prediction = asyncio.run(segment_volume(_model(_Checking()), volume, None, _in_thread, 0))
    depth = meta.model_shape[0]
    assert len(stops) > 2 and stops == sorted(stops) and stops[0] < depth == stops[-1]
    (got,), (want,) = prediction.result.masks, expected.masks
    assert np.array_equal(got.mask, want.mask) and got.voxel_count == want.voxel_count
    assert prediction.timings["preprocess_ms"] > 0


def test_mirrored_passes_take_the_whole_input(monkeypatch) -> None:
    stops = _nan_input(monkeypatch)
    model = _model(_Checking())
    spec = dataclasses.replace(model.config.volume, tta_flips=((2,),))
    model.config = dataclasses.replace(model.config, volume=spec)
    prediction = asyncio.run(segment_volume(model, _volume(), None, _in_thread, 0))
    assert stops == [] and prediction.windows > 0


def test_a_failed_fill_fails_the_call_and_leaves_nothing_running(monkeypatch) -> None:
    fill = SlabbedInput.fill

    def failing(self, depth):
        if self.filled:
            raise MemoryError("fill failed on purpose")
        return fill(self, depth)

    monkeypatch.setattr(pipeline_module.SlabbedInput, "fill", failing)
    batcher = _Batcher()

    async def call() -> None:
        with pytest.raises(MemoryError, match="on purpose"):
            await segment_volume(_model(batcher), _volume(), None, _in_thread, 0)
        await asyncio.sleep(0)
        current = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not current] == []

    asyncio.run(call())
    assert batcher.calls > 0
