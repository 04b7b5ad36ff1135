"""Execution providers: chosen automatically, forced by config, GPU paths when a GPU is present."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.serving.tiny_models import brightness_segmenter
from vision.config import RuntimeSpec
from vision.runtime import OnnxModel, check_loaded, choose_providers, nvinfer_loadable


def _has_gpu() -> bool:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    nvidia_smi = shutil.which("nvidia-smi")
    return bool(nvidia_smi) and subprocess.run([nvidia_smi], capture_output=True).returncode == 0


needs_gpu = pytest.mark.skipif(not _has_gpu(), reason="no NVIDIA GPU / onnxruntime-gpu here")


def test_auto_prefers_tensorrt_then_cuda_then_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    chosen = choose_providers(RuntimeSpec(), tmp_path / "cache")
    assert [p for p, _ in chosen] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt_options = chosen[0][1]
    assert trt_options["trt_fp16_enable"] == "True"
    assert trt_options["trt_engine_cache_enable"] == "True"
    assert Path(trt_options["trt_engine_cache_path"]).is_dir()


def test_forced_provider_and_cpu_fallback(monkeypatch, tmp_path):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    chosen = choose_providers(RuntimeSpec(providers=("cuda",)), tmp_path)
    assert [p for p, _ in chosen] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="none of the providers"):
        choose_providers(RuntimeSpec(providers=("tensorrt",)), tmp_path)


def test_cpu_session_reports_its_provider(tmp_path):
    model = OnnxModel(brightness_segmenter(tmp_path / "1" / "model.onnx"), RuntimeSpec())
    assert model.providers[-1] == "CPUExecutionProvider"
    out = model.run({"images": np.zeros((2, 3, 16, 16), np.float32)})
    assert out["logits"].shape == (2, 2, 16, 16)


@needs_gpu
def test_cuda_session_runs_and_matches_cpu(tmp_path):
    path = brightness_segmenter(tmp_path / "1" / "model.onnx")
    x = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    gpu = OnnxModel(path, RuntimeSpec(providers=("cuda",)))
    cpu = OnnxModel(path, RuntimeSpec(providers=("cpu",)))
    assert gpu.providers[0] == "CUDAExecutionProvider"
    assert np.allclose(
        gpu.run({"images": x})["logits"], cpu.run({"images": x})["logits"], atol=1e-4
    )


@needs_gpu
def test_tensorrt_session_builds_a_cached_engine(tmp_path):
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu without the TensorRT provider")
    if not nvinfer_loadable():
        pytest.skip("TensorRT's libraries (libnvinfer) are not installed")
    path = brightness_segmenter(tmp_path / "1" / "model.onnx")
    model = OnnxModel(path, RuntimeSpec(providers=("tensorrt",)))
    model.warmup((1,))
    assert model.providers[0] == "TensorrtExecutionProvider"
    assert any((tmp_path / "1" / ".trt-cache").iterdir())


def test_a_forced_provider_that_does_not_load_is_an_error(tmp_path):
    spec = RuntimeSpec(providers=("tensorrt",))
    requested = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match=r"\['tensorrt'\].*could not load.*libnvinfer"):
        check_loaded(tmp_path / "model.onnx", spec, requested, ["CPUExecutionProvider"])
    check_loaded(tmp_path / "model.onnx", spec, requested, requested)  # loaded: no error


def test_an_auto_provider_that_does_not_load_is_a_warning(tmp_path, caplog):
    requested = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    loaded = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="vision.runtime"):
        check_loaded(tmp_path / "model.onnx", RuntimeSpec(), requested, loaded)
    assert "['tensorrt'] listed by onnxruntime but not loaded" in caplog.text


@needs_gpu
def test_auto_runs_on_cuda_where_tensorrt_does_not_load(tmp_path):
    if nvinfer_loadable():
        pytest.skip("TensorRT loads here: auto chooses it")
    model = OnnxModel(brightness_segmenter(tmp_path / "1" / "model.onnx"), RuntimeSpec())
    assert model.providers[0] == "CUDAExecutionProvider"
