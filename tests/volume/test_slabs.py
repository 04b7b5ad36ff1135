"""Postprocessing a slab at a time as windows finish, against the one-shot path, bit for bit:
`SlabLabels` (and `upsampled_labels` built on it) against the previous one-shot
`upsampled_labels`, the Blender's `final_depth` / `divide_until`, and `ClassOneSlabs` against
`difference_probability` + `postprocess_two_classes`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from vision.config import InputSpec, ModelConfig, PostprocessSpec, VolumeSpec
from vision.errors import InvalidInputError
from vision.masks import encode_rle
from vision.volume.labels import (
    MIXED,
    AxisMaps,
    SlabLabels,
    _cell_extremes,
    _gather_plane,
    channel_argmax,
    interpolate_at,
    upsampled_labels,
)
from vision.volume.orient import Reorientation
from vision.volume.pipeline import VolumePipeline
from vision.volume.types import VolumeMeta
from vision.volume.window import Blender, pad_to_patch, plan_windows

GRIDS = [
    ((9, 14, 11), (20, 31, 11)),  # slices resampled up, x kept
    ((12, 16, 10), (5, 40, 10)),  # slices resampled down
    ((10, 15, 12), (10, 33, 27)),  # slices kept (the CT stand-in's case)
    ((4, 6, 5), (4, 6, 5)),  # nothing resampled: a copy
]


def _previous_coded(labels: np.ndarray, maps: AxisMaps) -> np.ndarray:
    """The one-shot `_coded` before slabs (session 16)."""
    source = labels.view(np.uint8) if labels.dtype == bool else labels
    plane_axes = tuple(a - 1 for a in (1, 2) if maps.resampled(a))
    coded = np.empty(labels.shape, np.uint8)
    ahead = _cell_extremes(source[0], plane_axes)
    for k in range(labels.shape[0]):
        high, low = ahead
        if k + 1 < labels.shape[0]:
            ahead = _cell_extremes(source[k + 1], plane_axes)
            if maps.resampled(0):
                np.maximum(high, ahead[0], out=high)
                np.minimum(low, ahead[1], out=low)
        np.copyto(high, np.uint8(MIXED), where=high != low)
        coded[k] = high
    return coded


def _previous_upsampled_labels(labels: np.ndarray, shape, exact) -> tuple[np.ndarray, int]:
    """The one-shot `upsampled_labels` before slabs (session 16)."""
    maps = AxisMaps(labels.shape, shape)
    if not any(maps.resampled(a) for a in range(3)):
        return labels.copy(), 0
    coded = _previous_coded(labels, maps)
    out = np.empty(maps.target, np.uint8)
    plane = maps.target[1] * maps.target[2]
    found = []
    for k, below in enumerate(maps.lo[0]):
        if k and below == maps.lo[0][k - 1]:
            out[k] = out[k - 1]
        else:
            _gather_plane(coded[below], maps, out[k])
        mixed = np.flatnonzero(out[k] == MIXED)
        if len(mixed):
            found.append(mixed + k * plane)
    points = np.concatenate(found) if found else np.empty(0, np.intp)
    if len(points):
        out.reshape(-1)[points] = exact(points, maps)
    if labels.dtype == bool:
        return out.view(bool), len(points)
    return out.astype(labels.dtype, copy=False), len(points)


def _probs(k: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(k, *shape))
    logits = ndimage.gaussian_filter(noise, (0, 1.2, 1.2, 1.2)) * 12.0
    logits -= logits.max(axis=0)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=0)).astype(np.float32)


def _splits(depth: int, seed: int) -> list[int]:
    """Increasing slab ends (some repeated, some single slices), ending at `depth`."""
    rng = np.random.default_rng(seed)
    ends = sorted(int(e) for e in rng.integers(0, depth + 1, size=max(depth // 2, 1)))
    return [*ends, 1, depth] if depth > 1 else [depth]


@pytest.mark.parametrize(("source", "target"), GRIDS)
@pytest.mark.parametrize("k", [2, 3])
def test_slab_labels_equal_the_previous_one_shot(source, target, k) -> None:
    probs = _probs(k, source, seed=k)
    labels = channel_argmax(probs)
    calls = []

    def exact(points, maps):
        calls.append(len(points))
        return channel_argmax(interpolate_at(probs, points, maps))

    expected, count = _previous_upsampled_labels(labels, target, exact)
    one_shot = upsampled_labels(labels, target, exact)
    assert np.array_equal(one_shot[0], expected) and one_shot[1] == count
    slabs = SlabLabels(source, target, exact, labels.dtype)
    calls.clear()
    for end in sorted(_splits(source[0], seed=k)):
        slabs.advance(labels, end)
    got, interpolated = slabs.result()
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert interpolated == count == sum(calls)
    if count:
        assert len(calls) > 1 or source[0] == 1  # exact per slab, not once at the end


def test_slab_labels_read_only_final_slices() -> None:
    source, target = (9, 14, 11), (20, 31, 11)
    prob = _probs(2, source, seed=3)[1]
    labels = prob > 0.5
    expected, _ = upsampled_labels(
        labels, target, lambda p, m: interpolate_at(prob[None], p, m)[0] > 0.5
    )
    streamed = np.zeros_like(prob)
    seen = np.zeros_like(labels)
    slabs = SlabLabels(
        source, target, lambda p, m: interpolate_at(streamed[None], p, m)[0] > 0.5, bool
    )
    for end in (2, 3, 7, 9):
        streamed[:end], seen[:end] = prob[:end], labels[:end]
        streamed[end:], seen[end:] = 0.9, True  # not final: garbage that must not be read
        slabs.advance(seen, end)
    got, _ = slabs.result()
    assert got.dtype == bool and np.array_equal(got, expected)


def test_slab_labels_refuse_an_early_result_and_large_labels() -> None:
    slabs = SlabLabels((4, 4, 4), (8, 8, 8), lambda p, m: p, np.dtype(np.int16))
    slabs.advance(np.zeros((4, 4, 4), np.int16), 2)
    with pytest.raises(InvalidInputError, match="2 of 4 slices"):
        slabs.result()
    with pytest.raises(InvalidInputError, match="below 255"):
        slabs.advance(np.full((4, 4, 4), 300, np.int16), 4)


def _blend(shape, patch, overlap, plan: bool, seed: int = 1):
    rng = np.random.default_rng(seed)
    windows = plan_windows(shape, patch, overlap)
    blender = Blender(1, shape, patch, plan=windows if plan else None)
    outputs = [rng.normal(size=(2, *patch)).astype(np.float32) for _ in windows]
    return blender, windows, outputs


def test_blender_divides_final_slabs_bit_identically() -> None:
    shape, patch = (40, 30, 26), (8, 16, 12)
    one_shot, windows, outputs = _blend(shape, patch, 0.25, plan=False)
    for window, output in zip(windows, outputs, strict=True):
        one_shot.add_difference(window, output)
    expected = one_shot.result()
    staged, _, _ = _blend(shape, patch, 0.25, plan=True)
    assert staged.final_depth() == 0
    depths = []
    for window, output in zip(windows, outputs, strict=True):
        staged.add_difference(window, output)
        depths.append(staged.final_depth())
        staged.divide_until(depths[-1])
        assert staged.divided_depth == depths[-1]
    starts = sorted({w[0].start for w in windows})
    assert sorted(set(depths) - {0}) == [*starts[1:], shape[0]]  # a z row done: its slab is final
    assert depths == sorted(depths)
    assert np.array_equal(staged.result(), expected)


def test_blender_with_a_plan_refuses_what_breaks_it() -> None:
    shape, patch = (20, 16, 12), (8, 16, 12)
    blender, windows, outputs = _blend(shape, patch, 0.0, plan=True)
    blender.add_difference(windows[0], outputs[0])
    with pytest.raises(InvalidInputError, match="still to come"):
        blender.divide_until(blender.final_depth() + 1)
    blender.divide_until(blender.final_depth())
    with pytest.raises(InvalidInputError, match="already divided"):
        blender.add_difference(windows[0], outputs[0])
    with pytest.raises(InvalidInputError, match="of the plan's"):
        blender.result()
    for window, output in zip(windows[1:], outputs[1:], strict=True):
        blender.add_difference(window, output)
    with pytest.raises(InvalidInputError, match="beyond the plan"):
        blender.add_difference(windows[-1], outputs[-1])
    with pytest.raises(InvalidInputError, match="with its plan"):
        Blender(1, shape, patch).divide_until(8)


def _config(orientation: str = "") -> ModelConfig:
    return ModelConfig(
        name="m",
        task="volumetric_segmentation",
        labels=("background", "organ"),
        input=InputSpec(layout="NCDHW", channels=1),
        postprocess=PostprocessSpec(type="argmax"),
        volume=VolumeSpec(spacing_mm=(2.0, 1.0, 1.0), orientation=orientation),
    )


def _logits(patch, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(2, *patch))
    return (ndimage.gaussian_filter(noise, (0, 1.0, 1.0, 1.0)) * 8.0).astype(np.float32)


CASES = [
    # model grid, original grid, patch, overlap, reoriented
    ((37, 30, 26), (37, 44, 40), (8, 16, 12), 0.25, False),  # slices kept (the CT's case)
    ((30, 21, 26), (75, 30, 26), (8, 16, 12), 0.5, False),  # slices resampled up
    ((6, 21, 26), (14, 30, 26), (8, 16, 12), 0.5, False),  # z padded: one row of windows
    ((29, 21, 18), (18, 40, 60), (8, 16, 12), 0.25, True),  # reoriented back, slices down
]


@pytest.mark.parametrize(("model", "grid", "patch", "overlap", "turned"), CASES)
def test_class_one_slabs_equal_the_one_shot_postprocess(
    model, grid, patch, overlap, turned
) -> None:
    turn = Reorientation.of(np.eye(3)[[1, 0, 2]], "RAS") if turned else None
    meta = VolumeMeta(grid, (1.0, 1.0, 1.0), model, (2.0, 1.0, 1.0), turn)
    pipeline = VolumePipeline(_config())
    padded, pad = pad_to_patch(np.zeros((1, *model), np.float32), patch)
    windows = plan_windows(padded.shape[1:], patch, overlap)
    outputs = [_logits(patch, seed=i) for i in range(len(windows))]
    one_shot = Blender(1, padded.shape[1:], patch)
    for window, output in zip(windows, outputs, strict=True):
        one_shot.add_difference(window, output)
    class1 = pipeline.difference_probability(one_shot.result(pad))
    expected = pipeline.postprocess_two_classes(class1, meta)
    slabs = pipeline.two_class_slabs(meta)
    assert slabs is not None
    staged = Blender(1, padded.shape[1:], patch, plan=windows)
    for window, output in zip(windows, outputs, strict=True):
        staged.add_difference(window, output)
        depth = staged.final_depth()
        if depth < padded.shape[1]:
            staged.divide_until(depth)
            slabs.advance(staged.view(pad), max(0, depth - pad[0][0]))
    steps = slabs.done
    slabs.advance(staged.result(pad), model[0])
    result = slabs.result()
    assert 0 < steps < model[0] or len({w[0].start for w in windows}) == 1
    assert np.array_equal(staged.result(pad), class1)
    assert len(result.masks) == len(expected.masks) == 1
    got, want = result.masks[0], expected.masks[0]
    assert np.array_equal(got.mask, want.mask) and got.mask.shape == grid
    assert (got.score, got.voxel_count, got.volume_mm3) == (
        want.score,
        want.voxel_count,
        want.volume_mm3,
    )
    # The run lengths made slab by slab are the whole mask's, where no reorientation follows
    assert want.run_lengths is None
    assert got.run_lengths == (None if turned else encode_rle(want.mask))


def test_two_class_slabs_only_where_they_apply() -> None:
    meta = VolumeMeta((8, 8, 8), (1.0, 1.0, 1.0), (8, 8, 8), (1.0, 1.0, 1.0))
    config = _config()
    assert VolumePipeline(config).two_class_slabs(meta) is not None
    mirrored = replace(config, volume=replace(config.volume, tta_flips=((0,),)))
    assert VolumePipeline(mirrored).two_class_slabs(meta) is None
    both = replace(config, postprocess=PostprocessSpec(type="argmax", background_class=-1))
    assert VolumePipeline(both).two_class_slabs(meta) is None
    sigmoid = replace(config, postprocess=PostprocessSpec(type="sigmoid"))
    assert VolumePipeline(sigmoid).two_class_slabs(meta) is None
