"""The cheaper volume blending and postprocessing against what they replace: a two-class
output blended as its logit difference (against MONAI and the two-channel blend), the
z-chunked `Blender.add` and the restructured `interpolate_at` (bit-identical), and
`postprocess_two_classes` (identical masks and scores to the two-channel postprocessing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vision.config import InputSpec, ModelConfig, PostprocessSpec, VolumeSpec
from vision.volume import window as window_module
from vision.volume.labels import AxisMaps, interpolate_at
from vision.volume.pipeline import VolumePipeline, softmax_in_place
from vision.volume.types import VolumeMeta
from vision.volume.window import Blender, importance_map, pad_to_patch, plan_windows, sliding_window


def _two_logits(batch: np.ndarray) -> np.ndarray:
    """A two-class 'model' [N, 1, ...] -> [N, 2, ...] whose output does not depend on the batch."""
    return np.concatenate([np.sin(3 * batch), batch * batch - 0.5], axis=1).astype(np.float32)


def _config(background: int = 0) -> ModelConfig:
    return ModelConfig(
        name="m",
        task="volumetric_segmentation",
        labels=("background", "organ"),
        input=InputSpec(layout="NCDHW", channels=1),
        postprocess=PostprocessSpec(type="argmax", background_class=background),
        volume=VolumeSpec(spacing_mm=(2.0, 1.0, 1.0)),
    )


def _folded(volume: np.ndarray, patch, overlap: float) -> np.ndarray:
    padded, pad = pad_to_patch(volume, patch)
    blender = Blender(1, padded.shape[1:], patch)
    for window in plan_windows(padded.shape[1:], patch, overlap):
        blender.add_difference(window, _two_logits(padded[(slice(None), *window)][None])[0])
    return blender.result(pad)


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [((20, 37, 29), (8, 16, 12), 0.25), ((5, 11, 9), (8, 16, 12), 0.5)],
)
def test_difference_blend_gives_the_two_channel_softmax(shape, patch, overlap) -> None:
    volume = np.random.default_rng(4).normal(size=(1, *shape)).astype(np.float32)
    both = sliding_window(volume, patch, overlap, _two_logits, batch_size=3)
    folded = _folded(volume, patch, overlap)
    assert folded.shape == (1, *shape)
    np.testing.assert_allclose(folded[0], both[1] - both[0], rtol=0, atol=1e-5)
    pipeline = VolumePipeline(_config())
    class1 = pipeline.difference_probability(folded.copy())
    expected = pipeline.probabilities(both)
    assert float(np.abs(class1[0] - expected[1]).max()) <= 1e-6
    decided = np.abs(expected[1] - 0.5) > 1e-5  # away from exact ties the labels agree
    assert np.array_equal((class1[0] > 0.5)[decided], (expected[1] > expected[0])[decided])


def test_difference_blend_matches_monai() -> None:
    torch = pytest.importorskip("torch")
    inferers = pytest.importorskip("monai.inferers")
    volume = np.random.default_rng(5).normal(size=(1, 17, 23, 31)).astype(np.float32)
    patch = (8, 16, 16)
    reference = inferers.sliding_window_inference(
        torch.from_numpy(volume[None]),
        roi_size=patch,
        sw_batch_size=2,
        predictor=lambda x: torch.from_numpy(_two_logits(x.numpy())),
        overlap=0.5,
        mode="gaussian",
    )[0].numpy()
    pipeline = VolumePipeline(_config())
    class1 = pipeline.difference_probability(_folded(volume, patch, 0.5))
    assert float(np.abs(class1[0] - softmax_in_place(reference.copy())[1]).max()) <= 1e-4


def test_chunked_add_is_bit_identical_to_one_step(monkeypatch) -> None:
    monkeypatch.setattr(window_module, "_CHUNK_VOXELS", 3 * 16 * 12)  # 3 planes: 16 = 5 x 3 + 1
    rng = np.random.default_rng(6)
    patch, shape = (16, 16, 12), (19, 30, 25)
    blender, folded = Blender(2, shape, patch), Blender(1, shape, patch)
    assert (blender._step, folded._step) == (1, 3)  # two channels: one plane of each at once
    assert Blender(1, shape, (8, 16, 12))._step == 8  # a window of 4 chunks: one step
    expected = np.zeros((2, *shape), np.float32)
    expected_difference = np.zeros(shape, np.float32)
    weights = importance_map(patch)
    windows = plan_windows(shape, patch, 0.5)
    for window in windows:
        output = rng.normal(size=(2, *patch)).astype(np.float32)
        blender.add(window, output)
        folded.add_difference(window, output)
        expected[(slice(None), *window)] += output * weights
        expected_difference[window] += (output[1] - output[0]) * weights
    assert np.array_equal(blender._sum, expected)
    assert np.array_equal(folded._sum[0], expected_difference)
    assert folded.windows_added == blender.windows_added == len(windows)
    coverage = np.zeros(shape, np.float32)
    for window in windows:
        coverage[window] += weights
    assert np.array_equal(folded.result()[0], expected_difference / coverage)


def _interpolate_corner_by_corner(values, points, maps) -> np.ndarray:
    """The previous `interpolate_at`: each of the eight corners computed from scratch."""
    _, height, width = maps.target
    z, rest = np.divmod(points, height * width)
    y, x = np.divmod(rest, width)
    flat = values.reshape(values.shape[0], -1)
    _, h, w = maps.source
    lo = [maps.lo[0][z], maps.lo[1][y], maps.lo[2][x]]
    hi = [maps.hi[0][z], maps.hi[1][y], maps.hi[2][x]]
    wt = [maps.w[0][z], maps.w[1][y], maps.w[2][x]]
    out = np.zeros((values.shape[0], len(points)), np.float32)
    for steps in np.ndindex(2, 2, 2):
        index = [(hi if s else lo)[a] for a, s in enumerate(steps)]
        weight = np.ones(len(points), np.float32)
        for a, step in enumerate(steps):
            weight *= wt[a] if step else np.float32(1.0) - wt[a]
        out += np.take(flat, (index[0] * h + index[1]) * w + index[2], axis=1) * weight
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_interpolate_at_is_bit_identical_to_corner_by_corner(channels) -> None:
    rng = np.random.default_rng(7)
    values = rng.random((channels, 9, 14, 11), dtype=np.float32)
    maps = AxisMaps(values.shape[1:], (20, 31, 11))  # x keeps its size
    points = np.sort(rng.choice(20 * 31 * 11, size=900, replace=False))
    expected = _interpolate_corner_by_corner(values, points, maps)
    assert np.array_equal(interpolate_at(values, points, maps), expected)


def _class1(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(2, *shape))
    logits = ndimage.gaussian_filter(noise, (0, 1.2, 1.2, 1.2)) * 12.0
    return softmax_in_place(logits.astype(np.float32))[1:]


@pytest.mark.parametrize("background", [0, -1])
def test_postprocess_two_classes_equals_the_two_channel_postprocess(background) -> None:
    class1 = _class1((10, 20, 18), seed=8)
    class1[0, 3, 4, 5] = 0.5  # an exact tie: class 0 wins in both
    meta = VolumeMeta((25, 27, 18), (0.8, 0.75, 1.0), (10, 20, 18), (2.0, 1.0, 1.0))
    pipeline = VolumePipeline(_config(background))
    both = np.concatenate([np.float32(1.0) - class1, class1])
    expected = pipeline.postprocess_probabilities(both, meta)
    result = pipeline.postprocess_two_classes(class1.copy(), meta)
    assert [m.class_id for m in result.masks] == [m.class_id for m in expected.masks]
    assert len(result.masks) == (1 if background == 0 else 2)
    for got, want in zip(result.masks, expected.masks, strict=True):
        assert np.array_equal(got.mask, want.mask)
        assert (got.score, got.voxel_count, got.label) == (want.score, want.voxel_count, want.label)
