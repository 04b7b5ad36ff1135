"""`vision.volume.window` against MONAI's `sliding_window_inference` (the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from vision.errors import InvalidInputError
from vision.volume.window import (
    Blender,
    importance_map,
    pad_to_patch,
    plan_windows,
    sliding_window,
)

torch = pytest.importorskip("torch")
monai_inferers = pytest.importorskip("monai.inferers")
monai_data_utils = pytest.importorskip("monai.data.utils")


def _net(channels: int = 1, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(channels, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(4, classes, 3, padding=1),
        torch.nn.Softmax(dim=1),
    )
    return net.eval()


def _run(net: torch.nn.Module):
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    return run


def _monai(volume: np.ndarray, patch, overlap, net, mode: str, sigma: float = 0.125) -> np.ndarray:
    with torch.no_grad():
        out = monai_inferers.sliding_window_inference(
            torch.from_numpy(volume[None]),
            roi_size=patch,
            sw_batch_size=3,
            predictor=net,
            overlap=overlap,
            mode=mode,
            sigma_scale=sigma,
        )
    return out[0].numpy()


CASES = [
    ((20, 37, 29), (8, 16, 12), 0.25),
    ((20, 37, 29), (8, 16, 12), 0.5),
    ((20, 37, 29), (8, 16, 12), 0.0),
    ((17, 23, 31), (16, 16, 16), 0.75),
    ((5, 11, 9), (8, 16, 12), 0.5),  # smaller than the patch on every axis
    ((8, 30, 7), (8, 16, 12), 0.5),  # one axis exactly the patch, one shorter
]


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize(("shape", "patch", "overlap"), CASES)
def test_sliding_window_matches_monai(shape, patch, overlap, mode) -> None:
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(1, *shape)).astype(np.float32)
    net = _net()
    ours = sliding_window(volume, patch, overlap, _run(net), batch_size=2, blend=mode)
    theirs = _monai(volume, patch, overlap, net, mode)
    assert ours.shape == theirs.shape == (3, *shape)
    assert float(np.abs(ours - theirs).max()) <= 1e-4


def test_sigma_scale_and_two_channels_match_monai() -> None:
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(2, 14, 21, 18)).astype(np.float32)
    net = _net(channels=2, classes=2)
    ours = sliding_window(volume, (8, 8, 8), 0.4, _run(net), blend="gaussian", sigma_scale=0.25)
    theirs = _monai(volume, (8, 8, 8), 0.4, net, "gaussian", sigma=0.25)
    assert float(np.abs(ours - theirs).max()) <= 1e-4


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("patch", [(8, 16, 12), (7, 9, 5), (1, 4, 4)])
def test_importance_map_matches_monai(patch, mode) -> None:
    theirs = monai_data_utils.compute_importance_map(patch, mode=mode, sigma_scale=0.125)
    np.testing.assert_allclose(importance_map(patch, mode), theirs.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("shape", "patch", "overlap"), CASES)
def test_windows_match_dense_patch_slices(shape, patch, overlap) -> None:
    padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    interval = [
        p if p == s else max(int(p * (1 - overlap)), 1) for s, p in zip(padded, patch, strict=True)
    ]
    theirs = monai_data_utils.dense_patch_slices(padded, patch, interval)
    assert plan_windows(shape, patch, overlap) == [tuple(s) for s in theirs]


def _elementwise(batch: np.ndarray) -> np.ndarray:
    """A model whose output per window does not depend on the batch it is in."""
    sig = 1.0 / (1.0 + np.exp(-batch))
    return np.concatenate([sig, 1.0 - sig, sig * sig], axis=1).astype(np.float32)


def test_blender_one_window_at_a_time_matches_sliding_window() -> None:
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(1, 9, 30, 25)).astype(np.float32)
    patch, overlap = (12, 16, 16), 0.5
    expected = sliding_window(volume, patch, overlap, _elementwise, batch_size=4)
    padded, pad = pad_to_patch(volume, patch)
    windows = plan_windows(padded.shape[1:], patch, overlap)
    blender = Blender(3, padded.shape[1:], patch, "gaussian", 0.125)
    for window in windows:  # one at a time, as a dynamic batcher would send them
        blender.add(window, _elementwise(padded[(slice(None), *window)][None])[0])
    np.testing.assert_array_equal(blender.result(pad), expected)
    assert pad == ((1, 2), (0, 0), (0, 0))
    shuffled = Blender(3, padded.shape[1:], patch, "gaussian", 0.125)
    for index in rng.permutation(len(windows)):  # out of order: equal up to float rounding
        window = windows[index]
        shuffled.add(window, _elementwise(padded[(slice(None), *window)][None])[0])
    np.testing.assert_allclose(shuffled.result(pad), expected, rtol=0, atol=1e-6)


def test_blender_refuses_missing_windows_and_wrong_shapes() -> None:
    blender = Blender(2, (10, 10, 10), (8, 8, 8))
    with pytest.raises(InvalidInputError, match="expected"):
        blender.add((slice(0, 8),) * 3, np.zeros((2, 4, 8, 8), np.float32))
    blender.add((slice(0, 8),) * 3, np.zeros((2, 8, 8, 8), np.float32))
    with pytest.raises(InvalidInputError, match="covered by no window"):
        blender.result()
    with pytest.raises(InvalidInputError, match="pad_to_patch"):
        Blender(1, (4, 10, 10), (8, 8, 8))
    with pytest.raises(InvalidInputError, match="overlap"):
        plan_windows((10, 10, 10), (8, 8, 8), 1.0)
