"""TensorRT (FP16) engines through ONNX Runtime's TensorRT provider, with a parity check.

`vision export --tensorrt` calls `require_tensorrt()` before anything else (no GPU: a clear
message and a non-zero exit) and `tensorrt_parity()` after the ONNX export: the engine is built
into the model's engine cache (the same cache the server's `RuntimeSpec` uses, so the server
starts warm) and its outputs are compared with ONNX Runtime on CPU on the same real inputs.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vision.config import RuntimeSpec
from vision.runtime import OnnxModel

TRT = "TensorrtExecutionProvider"
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
) -> dict:
    """Per-output max abs difference, TensorRT (`engine`, built when None) vs ONNX Runtime CPU."""
    engine = engine or build_engine(onnx_path, runtime)
    cpu = OnnxModel(onnx_path, dataclasses.replace(runtime, providers=("cpu",)))
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
