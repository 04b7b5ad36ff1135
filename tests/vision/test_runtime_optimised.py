"""Stored optimised graphs (`vision.optimised`) and the session's memory and warm-up settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from serving.repository import warmup_batches
from tests.serving.tiny_models import brightness_segmenter, segmenter_config
from tests.vision.test_quantize import _conv_then_scale
from vision.config import RuntimeSpec
from vision.errors import ConfigError
from vision.optimised import (
    ORT_KEY,
    SOURCE_KEY,
    file_sha256,
    optimised_path,
    parity,
    write_optimised,
)
from vision.runtime import OnnxModel

CPU = RuntimeSpec(providers=("cpu",))


def _feeds() -> dict[str, np.ndarray]:
    return {"images": np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)}


def test_stored_graph_is_stamped_used_and_gives_the_same_outputs(tmp_path: Path) -> None:
    source = _conv_then_scale(tmp_path / "model.onnx")
    before = OnnxModel(source, CPU)
    assert not before.optimised
    stored = write_optimised(source)
    assert stored == optimised_path(source) == tmp_path / "model.optimized.onnx"
    keys = {p.key: p.value for p in onnx.load(str(stored)).metadata_props}
    assert keys[SOURCE_KEY] == file_sha256(source) and keys[ORT_KEY]
    after = OnnxModel(source, CPU)
    assert after.optimised and after.path == source
    np.testing.assert_allclose(
        after.run(_feeds())["out"], before.run(_feeds())["out"], rtol=1e-5, atol=1e-6
    )


def test_a_changed_model_or_another_ort_falls_back_to_optimising_at_load(tmp_path) -> None:
    source = _conv_then_scale(tmp_path / "model.onnx")
    stored = write_optimised(source)
    model = onnx.load(str(stored))
    for prop in model.metadata_props:
        if prop.key == ORT_KEY:
            prop.value = "0.0.0"
    onnx.save(model, str(stored))
    assert not OnnxModel(source, CPU).optimised
    write_optimised(source)
    assert OnnxModel(source, CPU).optimised
    brightness_segmenter(source)  # re-exported: another graph under the same name
    assert not OnnxModel(source, CPU).optimised


def test_parity_gate_refuses_a_graph_that_differs(tmp_path: Path) -> None:
    source = _conv_then_scale(tmp_path / "model.onnx")
    other = _conv_then_scale(tmp_path / "other.onnx")
    model = onnx.load(str(other))
    model.graph.initializer[1].CopyFrom(
        onnx.numpy_helper.from_array(np.array(2.0, np.float32), "k")
    )
    onnx.save(model, str(other))
    with pytest.raises(ConfigError, match="not stored"):
        parity(source, other)


def test_warm_up_once_on_cpu_every_batch_size_on_cuda_and_the_range_on_tensorrt() -> None:
    config = segmenter_config()
    assert warmup_batches(config, ["CPUExecutionProvider"]) == (1,)
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert warmup_batches(config, gpu) == tuple(range(1, 9))  # cuDNN searches per shape
    trt = ["TensorrtExecutionProvider", *gpu]
    assert warmup_batches(config, trt) == (1, 8)  # the engine's shape range
    one = dataclasses.replace(
        config, batching=dataclasses.replace(config.batching, max_batch_size=1)
    )
    assert warmup_batches(one, gpu) == (1,)


def test_runs_shrink_the_arena_and_keep_answers(tmp_path: Path) -> None:
    source = _conv_then_scale(tmp_path / "model.onnx")
    model = OnnxModel(source, CPU)
    entries = model.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
    assert entries == "cpu:0"
    first = model.run(_feeds())["out"]
    np.testing.assert_array_equal(model.run(_feeds())["out"], first)


def test_export_writes_the_stored_graph_beside_the_model(tmp_path: Path) -> None:
    from vision.export import write_repository_entry

    config = segmenter_config("exported")
    source = brightness_segmenter(tmp_path / "source.onnx")
    folder = write_repository_entry(tmp_path / "repo", config, source, {"metrics": {}}, 1)
    assert (folder / "1" / "model.optimized.onnx").is_file()
    assert OnnxModel(folder / "1" / "model.onnx", CPU).optimised
