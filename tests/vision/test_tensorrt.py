"""`vision export --tensorrt`: refuses cleanly without a GPU; checks an engine with one."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serving.tiny_models import brightness_segmenter
from vision import tensorrt
from vision.config import RuntimeSpec

needs_trt = pytest.mark.skipif(
    tensorrt.unavailable_reason() is not None,
    reason=f"TensorRT unavailable: {tensorrt.unavailable_reason()}",
)


@pytest.mark.parametrize("module", ["vision.segment.cli", "vision.detect.cli"])
def test_export_tensorrt_without_gpu_says_so_and_exits_nonzero(module, monkeypatch, capsys):
    import importlib

    monkeypatch.setattr(tensorrt, "unavailable_reason", lambda: "no TensorRT provider (test)")
    cli = importlib.import_module(module)
    argv = ["--recipe", "tile-defects", "--tensorrt"] if "segment" in module else []
    argv = argv or ["--recipe", "blood-cells", "--checkpoint", "absent.pt", "--tensorrt"]
    assert cli.export(argv) == 2
    assert "--tensorrt needs an NVIDIA GPU: no TensorRT provider (test)" in capsys.readouterr().err


def test_require_tensorrt_raises_with_the_reason(monkeypatch):
    monkeypatch.setattr(tensorrt, "unavailable_reason", lambda: "no GPU (test)")
    with pytest.raises(tensorrt.TensorRTUnavailableError, match="no GPU"):
        tensorrt.require_tensorrt()


def test_tensorrt_runtime_forces_provider_fp16_and_cache(tmp_path):
    spec = tensorrt.tensorrt_runtime(RuntimeSpec(intra_op_threads=3), tmp_path / "cache")
    assert spec.providers == ("tensorrt",) and spec.tensorrt_fp16
    assert spec.tensorrt_cache_dir == str(tmp_path / "cache") and spec.intra_op_threads == 3


@needs_trt
def test_tensorrt_parity_on_a_small_model(tmp_path):
    path = brightness_segmenter(tmp_path / "1" / "model.onnx")
    runtime = tensorrt.tensorrt_runtime(RuntimeSpec(), tmp_path / "1" / ".trt-cache")
    batches = [np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)]
    report = tensorrt.tensorrt_parity(path, batches, runtime)
    assert report["provider"] == "TensorrtExecutionProvider"
    assert report["passed"], report
    assert any((tmp_path / "1" / ".trt-cache").iterdir())


def test_metric_gate_compares_each_metric_within_tolerance():
    gate = tensorrt.metric_gate(
        {"dice": 0.80, "auroc": 0.90}, {"dice": 0.797, "auroc": 0.91}, 0.005
    )
    assert gate["abs_diff"]["dice"] == pytest.approx(0.003) and not gate["passed"]
    assert tensorrt.metric_gate({"val_map": 0.5}, {"val_map": 0.504}, 0.005)["passed"]


def test_tensorrt_gate_without_gpu_raises_before_any_work(monkeypatch, tmp_path):
    from tests.serving.tiny_models import segmenter_config

    monkeypatch.setattr(tensorrt, "unavailable_reason", lambda: "no GPU (test)")
    with pytest.raises(tensorrt.TensorRTUnavailableError, match="no GPU"):
        tensorrt.tensorrt_gate(segmenter_config(), tmp_path, [], lambda model: {}, 0.01)


@needs_trt
def test_tensorrt_gate_records_parity_and_the_metric_in_the_card(tmp_path):
    import json

    from tests.serving.tiny_models import segmenter_config
    from vision.config import write_config

    config = segmenter_config("bright")
    write_config(config, tmp_path / "bright")
    version_dir = tmp_path / "bright" / "1"
    brightness_segmenter(version_dir / "model.onnx")
    rng = np.random.default_rng(0)
    batches = [rng.random((2, 3, 64, 64), dtype=np.float32)]

    def metrics(model):
        logits = model.run(batches[0])["logits"]
        return {"foreground": float((logits.argmax(1) == 1).mean())}

    entry = tensorrt.tensorrt_gate(config, version_dir, batches, metrics, 0.01)
    assert entry["passed"], entry
    assert entry["metric_gate_val"]["tensorrt"]["foreground"] == pytest.approx(
        entry["metric_gate_val"]["cpu"]["foreground"], abs=0.01
    )
    card = json.loads((tmp_path / "bright" / "card.json").read_text())
    assert card["tensorrt"]["provider"] == "TensorrtExecutionProvider"


def test_a_listed_tensorrt_provider_without_libnvinfer_is_unavailable(monkeypatch):
    # as seen on an H200 with onnxruntime-gpu 1.31 and no TensorRT installed
    monkeypatch.setattr(tensorrt.ort, "get_available_providers", lambda: [tensorrt.TRT])
    monkeypatch.setattr(tensorrt.shutil, "which", lambda _: "/bin/true")
    monkeypatch.setattr(tensorrt, "nvinfer_loadable", lambda: False)
    assert "libnvinfer" in (tensorrt.unavailable_reason() or "")
    monkeypatch.setattr(tensorrt, "nvinfer_loadable", lambda: True)
    assert tensorrt.unavailable_reason() is None
