"""bench.volume_cpu: the in-process CPU table runs the served stages on a real ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.volume_cpu import cpu_stages
from serving.volumes import VolumeSource
from tests.serving.tiny_models import build_volume_repository, volume_config


def test_cpu_stages_of_a_small_volume(tmp_path: Path) -> None:
    config = volume_config("mirrored", tta_flips=[[2]])
    models = build_volume_repository(tmp_path, config)
    voxels = np.zeros((10, 24, 20), np.float32)
    voxels[3:7, 8:16, 6:14] = 1.0
    source = VolumeSource(raw=voxels.tobytes(), shape=voxels.shape, dtype="float32")
    row = cpu_stages(models / "mirrored", source, repeats=1)
    stages = ("decode", "preprocess", "inference", "blend", "postprocess", "encode")
    assert all(row[s] >= 0.0 for s in stages)
    assert row["inference"] > 0.0
    assert row["total"] == sum(row[s] for s in stages)
    assert 0.0 < row["non_inference_share"] < 1.0
    assert row["windows"] > 0 and row["windows"] % 2 == 0  # two passes, the same windows
