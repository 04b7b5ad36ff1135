"""Cheap resampling: the separable float32 linear resampling against scipy's zoom, and the
labels of linearly resampled probabilities computed only at the boundaries against the dense
computation (resample everything with scipy, then argmax or threshold)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vision.config import InputSpec, ModelConfig, PostprocessSpec, VolumeSpec
from vision.errors import InvalidInputError
from vision.volume.labels import channel_argmax, interpolate_at, resample_linear, upsampled_labels
from vision.volume.pipeline import VolumePipeline, softmax_in_place
from vision.volume.types import VolumeMeta

GRIDS = [
    ((7, 9, 11), (13, 5, 11)),
    ((20, 30, 24), (20, 47, 61)),
    ((12, 16, 10), (5, 40, 10)),
    ((1, 4, 6), (3, 4, 9)),
]


def _scipy(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    factors = [t / s for t, s in zip(shape, array.shape[-3:], strict=True)]
    out = ndimage.zoom(array.astype(np.float32), factors, order=1, mode="nearest", grid_mode=True)
    return out[tuple(slice(0, n) for n in shape)]


def _smooth_probs(k: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(k, *shape))
    logits = ndimage.gaussian_filter(noise, (0, 1.2, 1.2, 1.2)) * 12.0
    return softmax_in_place(logits.astype(np.float32))


@pytest.mark.parametrize(("source", "target"), GRIDS)
def test_resample_linear_gives_scipys_values(source, target) -> None:
    volume = np.random.default_rng(0).normal(size=source).astype(np.float32)
    out = resample_linear(volume, target)
    assert out.shape == target and out.dtype == np.float32
    assert np.abs(out - _scipy(volume, target)).max() < 1e-5
    stacked = resample_linear(np.stack([volume, 3 * volume]), target)
    assert np.abs(stacked[1] - 3 * out).max() < 1e-4
    assert resample_linear(volume, source) is not volume


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize(("source", "target"), GRIDS)
def test_boundary_only_argmax_equals_dense(k, source, target) -> None:
    probs = _smooth_probs(k, source, seed=k)
    dense = np.stack([_scipy(c, target) for c in probs]).argmax(axis=0)

    def exact(points, maps):
        return channel_argmax(interpolate_at(probs, points, maps))

    labels, interpolated = upsampled_labels(channel_argmax(probs), target, exact)
    assert labels.shape == target
    assert np.array_equal(labels, dense)
    assert 0 < interpolated < labels.size or labels.size < 50


def test_boundary_only_threshold_equals_dense() -> None:
    prob = _smooth_probs(2, (12, 16, 10), seed=1)[1]
    target = (30, 9, 21)
    dense = _scipy(prob, target) > 0.3
    labels, _ = upsampled_labels(
        prob > 0.3, target, lambda points, maps: interpolate_at(prob[None], points, maps)[0] > 0.3
    )
    assert labels.dtype == bool and np.array_equal(labels, dense)


def test_labels_of_255_or_more_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="below 255"):
        upsampled_labels(np.full((2, 2, 2), 300, np.int16), (4, 4, 4), lambda p, m: p)


def test_channel_argmax_matches_numpy() -> None:
    values = np.random.default_rng(2).random((4, 6, 7, 8), dtype=np.float32)
    values[2, 0, 0, 0] = values[1, 0, 0, 0]  # a tie goes to the first channel, as numpy's
    assert np.array_equal(channel_argmax(values), values.argmax(axis=0))
    assert np.array_equal(channel_argmax(values[:2]), values[:2].argmax(axis=0))


@pytest.mark.parametrize("kind", ["argmax", "sigmoid"])
def test_pipeline_masks_equal_dense_resampling(kind) -> None:
    """The served postprocess against resampling every probability map with scipy."""
    config = ModelConfig(
        name="m",
        task="volumetric_segmentation",
        labels=("background", "a", "b"),
        input=InputSpec(layout="NCDHW", channels=1),
        postprocess=PostprocessSpec(type=kind, mask_threshold=0.4),
        volume=VolumeSpec(spacing_mm=(2.0, 1.0, 1.0)),
    )
    probs = _smooth_probs(3, (10, 20, 18), seed=5)
    meta = VolumeMeta((25, 27, 18), (0.8, 0.75, 1.0), (10, 20, 18), (2.0, 1.0, 1.0))
    result = VolumePipeline(config).postprocess_probabilities(probs.copy(), meta)
    dense = np.stack([_scipy(c, meta.shape) for c in probs])
    if kind == "argmax":
        expected = {c: dense.argmax(0) == c for c in (1, 2)}
    else:
        expected = {c: dense[c] > 0.4 for c in range(3)}
    expected = {c: m for c, m in expected.items() if m.any()}
    assert {m.class_id: m.mask for m in result.masks}.keys() == expected.keys()
    for mask in result.masks:
        assert np.array_equal(mask.mask, expected[mask.class_id])
        assert mask.volume_mm3 == pytest.approx(mask.voxel_count * 0.8 * 0.75)
        assert 0.0 < mask.score <= 1.0
