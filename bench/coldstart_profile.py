"""Where one model's load time goes, step by step, in this process (`bench.coldstart --profile`).

Steps: read the config, open the plain session (`vision.runtime.OnnxModel`, which uses the
stored optimised graph when there is one), warm it up once per batch size the server warms, open
the explain session and run the load-time parity check `Explainer.check_outputs`. For
comparison it also opens the plain graph with ONNX Runtime optimising it from scratch (what every
start cost before the optimised graph was stored).
"""

from __future__ import annotations

import time
from pathlib import Path

import onnxruntime as ort


def _timed(step, *args):
    started = time.perf_counter()
    value = step(*args)
    return value, time.perf_counter() - started


def _fresh_session_s(path: Path) -> float:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    started = time.perf_counter()
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return time.perf_counter() - started


def profile_model(model_dir: Path) -> str:
    """One line: the seconds of each load step of the latest version of `model_dir`."""
    from serving.repository import warmup_batches
    from vision.config import load_config
    from vision.loader import latest_version
    from vision.runtime import OnnxModel
    from vision.xai.explainer import Explainer

    config, t_config = _timed(load_config, model_dir)
    folder = model_dir / latest_version(model_dir, config.model_file)
    session, t_session = _timed(OnnxModel, folder / config.model_file, config.runtime)
    sizes = warmup_batches(config, session.providers)
    _, t_warm = _timed(session.warmup, sizes)
    top = (max(1, config.batching.max_batch_size),)
    _, t_cold_top = _timed(session.warmup, top)  # first run at the max batch after warm-up
    _, t_warm_top = _timed(session.warmup, top)  # and the next one
    parts = [
        f"{config.name:22s} config {t_config:.3f}",
        f"session {t_session:.3f} ({'stored optimised' if session.optimised else 'optimised now'})",
        f"warm-up {sizes} {t_warm:.3f}",
        f"batch {top[0]} first {t_cold_top:.3f} / next {t_warm_top:.3f}",
    ]
    if config.explain.file:
        explain, t_explain = _timed(OnnxModel, folder / config.explain.file, config.runtime)
        parts.append(f"explain session {t_explain:.3f}")
        if config.task == "segmentation":
            explainer = Explainer(config, explain)
            _, t_check = _timed(explainer.check_outputs, session)
            parts.append(f"parity check {t_check:.3f}")
    parts.append(f"[unstored: ORT optimises {_fresh_session_s(folder / config.model_file):.3f}]")
    return ", ".join(parts)
