"""Raw integer voxels kept as sent (`volume_from_raw(keep_integers=True)`, the server's
path): preprocessing them gives the same float32 tensor, bit for bit, as from the float32
copy, for every normalisation and with or without in-plane resizing."""

from __future__ import annotations

import numpy as np
import pytest

from vision.config import InputSpec, ModelConfig, PostprocessSpec, VolumeSpec
from vision.volume.pipeline import VolumePipeline
from vision.volume.sources import volume_from_raw


def _config(normalisation: str, spacing: tuple[float, float, float]) -> ModelConfig:
    return ModelConfig(
        name="m",
        task="volumetric_segmentation",
        labels=("background", "organ"),
        input=InputSpec(layout="NCDHW", channels=1),
        postprocess=PostprocessSpec(type="argmax"),
        volume=VolumeSpec(
            spacing_mm=spacing, normalisation=normalisation, window_min=-200.0, window_max=300.0
        ),
    )


@pytest.mark.parametrize("normalisation", ["window", "zscore", "zscore_nonzero", "none"])
@pytest.mark.parametrize("spacing", [(2.5, 1.0, 1.0), (2.0, 0.7, 0.7), (1.5, 0.7, 0.7)])
@pytest.mark.parametrize("dtype", ["int16", "uint16", "uint8"])
def test_integer_voxels_preprocess_like_their_float32_copy(normalisation, spacing, dtype) -> None:
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    low, high = max(int(info.min), -1200), min(int(info.max), 1500)
    voxels = rng.integers(low, high, size=(12, 40, 36)).astype(dtype)
    voxels[:, :5] = 0  # zeros, for zscore_nonzero
    data, args = voxels.astype(f"<{voxels.dtype.str[1:]}").tobytes(), (voxels.shape, dtype)
    kept = volume_from_raw(data, *args, (2.5, 0.7, 0.7), keep_integers=True)
    copied = volume_from_raw(data, *args, (2.5, 0.7, 0.7))
    assert kept.voxels.dtype == np.dtype(dtype) and copied.voxels.dtype == np.float32
    assert not kept.voxels.flags.writeable  # a view of the request's bytes, not a copy
    pipeline = VolumePipeline(_config(normalisation, spacing))
    tensor, meta = pipeline.preprocess(kept)
    expected, expected_meta = pipeline.preprocess(copied)
    assert tensor.dtype == np.float32 and meta == expected_meta
    assert np.array_equal(tensor, expected)


def test_float32_voxels_are_copied_either_way() -> None:
    values = np.arange(24, dtype="<f4").reshape(2, 3, 4)
    data, shape = values.tobytes(), values.shape
    volume = volume_from_raw(data, shape, "float32", (1, 1, 1), keep_integers=True)
    assert volume.voxels.dtype == np.float32 and volume.voxels.flags.writeable
