"""TensorRT (FP16) engines through ONNX Runtime's TensorRT provider, and the one TensorRT gate.

`vision export --tensorrt` checks `unavailable_reason()` before anything else (no GPU: a clear
message and a non-zero exit) and runs `tensorrt_gate()` after the repository entry is written,
for either task: the engine is built into the version's engine cache (the same cache the
server's `RuntimeSpec` uses, so the server starts warm), its outputs are compared with ONNX
Runtime on CPU on the same real inputs, and the task's validation metric (a callback scoring a
`vision.loader.LoadedModel` through the server's `Pipeline`) must agree within a tolerance.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vision.config import ModelConfig, RuntimeSpec
from vision.loader import LoadedModel, open_model
from vision.runtime import OnnxModel, nvinfer_loadable

log = logging.getLogger(__name__)
TRT = "TensorrtExecutionProvider"
MetricFn = Callable[[LoadedModel], dict[str, float]]
FP16_ABS_TOLERANCE = 0.05  # FP16 logits drift; the metric gate is the binding check


class TensorRTUnavailableError(RuntimeError):
    """No TensorRT provider or no GPU to run it on."""


def unavailable_reason() -> str | None:
    """Why TensorRT cannot be used here, or None when it can."""
    if TRT not in ort.get_available_providers():
        return (
            f"this onnxruntime ({ort.__version__}, providers {ort.get_available_providers()}) has "
            "no TensorRT provider: install the `gpu` extra (onnxruntime-gpu + TensorRT)"
        )
    nvidia_smi = shutil.which("nvidia-smi")
    if not nvidia_smi or subprocess.run([nvidia_smi], capture_output=True).returncode != 0:
        return "onnxruntime-gpu is installed but nvidia-smi finds no NVIDIA GPU"
    if not nvinfer_loadable():
        return (
            "onnxruntime-gpu lists TensorRT, but TensorRT's libraries (libnvinfer) do not load: "
            "install TensorRT (the `gpu` extra) or put its libraries on LD_LIBRARY_PATH"
        )
    return None


def require_tensorrt() -> None:
    """Raise TensorRTUnavailableError (with what to do) when TensorRT cannot run here."""
    reason = unavailable_reason()
    if reason:
        raise TensorRTUnavailableError(f"--tensorrt needs an NVIDIA GPU: {reason}")


def tensorrt_runtime(base: RuntimeSpec, cache_dir: Path, fp16: bool = True) -> RuntimeSpec:
    """`base` forced onto TensorRT (FP16 by default) with its engine cache in `cache_dir`."""
    return dataclasses.replace(
        base, providers=("tensorrt",), tensorrt_fp16=fp16, tensorrt_cache_dir=str(cache_dir)
    )


def build_engine(onnx_path: Path, runtime: RuntimeSpec) -> OnnxModel:
    """A session whose first provider is TensorRT (the engine is built on first run)."""
    require_tensorrt()
    model = OnnxModel(onnx_path, runtime)
    if model.providers[0] != TRT:
        raise TensorRTUnavailableError(f"TensorRT did not take the model: {model.providers}")
    return model


def tensorrt_parity(
    onnx_path: Path,
    batches: list[np.ndarray],
    runtime: RuntimeSpec,
    tolerance: float = FP16_ABS_TOLERANCE,
    engine: OnnxModel | None = None,
    cpu: OnnxModel | None = None,
) -> dict:
    """Per-output max abs difference, TensorRT (`engine`, built when None) vs ONNX Runtime CPU
    (`cpu`, made when None)."""
    engine = engine or build_engine(onnx_path, runtime)
    cpu = cpu or OnnxModel(onnx_path, dataclasses.replace(runtime, providers=("cpu",)))
    name = cpu.inputs[0].name
    worst: dict[str, float] = {}
    for batch in batches:
        expected, got = cpu.run({name: batch}), engine.run({name: batch})
        for key, value in expected.items():
            diff = float(np.max(np.abs(value.astype(np.float64) - got[key])))
            worst[key] = max(worst.get(key, 0.0), diff)
    return {
        "provider": engine.providers[0],
        "fp16": runtime.tensorrt_fp16,
        "engine_cache": runtime.tensorrt_cache_dir,
        "max_abs_diff": worst,
        "max_abs_diff_limit": tolerance,
        "passed": max(worst.values()) <= tolerance,
    }


def metric_gate(reference: dict[str, float], candidate: dict[str, float], tolerance: float) -> dict:
    """Absolute differences per metric (same units as the metrics) and whether all are within
    `tolerance`."""
    diffs = {k: abs(float(reference[k]) - float(candidate[k])) for k in reference}
    return {
        "cpu": reference,
        "tensorrt": candidate,
        "abs_diff": diffs,
        "tolerance": tolerance,
        "passed": all(d <= tolerance for d in diffs.values()),
    }


def tensorrt_gate(
    config: ModelConfig,
    version_dir: Path,
    batches: list[np.ndarray],
    metrics: MetricFn,
    metric_tolerance: float,
    reference: dict[str, float] | None = None,
) -> dict:
    """The TensorRT gate of both tasks, recorded as the model card's `tensorrt` entry.

    FP16 engine for `version_dir/<model_file>` into `version_dir/.trt-cache`; output parity on
    `batches` against ONNX Runtime CPU; `metrics` of the CPU model (or `reference`, when the
    caller has them) and of the engine, each a `LoadedModel` with the server's pipeline. The
    entry's `passed` is False when either check fails.
    """
    from vision.export import read_card, write_card

    require_tensorrt()
    onnx_path = Path(version_dir) / config.model_file
    runtime = tensorrt_runtime(config.runtime, Path(version_dir) / ".trt-cache")
    engine = open_model(dataclasses.replace(config, runtime=runtime), onnx_path)
    if engine.providers[0] != TRT:
        raise TensorRTUnavailableError(f"TensorRT did not take the model: {engine.providers}")
    cpu = open_model(config, onnx_path, dataclasses.replace(runtime, providers=("cpu",)))
    entry = tensorrt_parity(onnx_path, batches, runtime, engine=engine.session, cpu=cpu.session)
    gate = metric_gate(reference or metrics(cpu), metrics(engine), metric_tolerance)
    entry |= {"metric_gate_val": gate, "passed": entry["passed"] and gate["passed"]}
    model_dir = Path(version_dir).parent
    write_card(model_dir, {**read_card(model_dir), "tensorrt": entry})
    log.info("TensorRT gate: %s", entry)
    return entry
