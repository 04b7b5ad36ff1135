"""CPU seconds per stage of the volumetric path, in-process, for `bench.volume`.

On a shared machine the server's wall-clock stages measure the scheduler as much as the code:
a stage waits for a core while other users' processes run. Process CPU time
(`time.process_time`, every thread of this process, ONNX Runtime's pool included) does not,
so this runs the served pipeline's own functions — `serving.volumes.assemble`,
`VolumePipeline.preprocess`, the windows of `plan_windows` in batches of the config's
`max_batch_size` through an `OnnxModel` with the config's runtime options, `Blender` (a
two-class argmax output folded to its logit difference, as served), the
mirroring passes, `postprocess_probabilities` and the servicer's run-length encoding — and
reports each stage's CPU time and the share that is not inference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serving.rpc.volume_servicer import _mask_message
from serving.volumes import VolumeSource, assemble
from vision.config import load_config
from vision.runtime import OnnxModel
from vision.volume.pipeline import VolumePipeline
from vision.volume.tta import ProbabilityMean, flip_spatial
from vision.volume.window import Blender, pad_to_patch, plan_windows


def _cpu(clock: dict[str, float], stage: str, fn: Callable[..., Any], *args: Any) -> Any:
    start = time.process_time()
    out = fn(*args)
    clock[stage] = clock.get(stage, 0.0) + (time.process_time() - start) * 1000.0
    return out


def _pass(model: OnnxModel, pipeline: VolumePipeline, tensor: np.ndarray, clock: dict) -> Any:
    """One sliding-window pass: inference and blending timed apart."""
    spec, config = pipeline.config.volume, pipeline.config
    padded, pad = _cpu(clock, "blend", pad_to_patch, tensor, spec.patch)
    windows = plan_windows(padded.shape[1:], spec.patch, spec.overlap)
    size = max(config.batching.max_batch_size, 1)
    blender, fold = None, False
    for start in range(0, len(windows), size):
        chunk = windows[start : start + size]
        batch = _cpu(
            clock, "blend", lambda c=chunk: np.stack([padded[(slice(None), *w)] for w in c])
        )
        feeds = {model.inputs[0].name: batch}
        out = _cpu(clock, "inference", model.run, feeds)[model.output_names[0]]
        if blender is None:  # as served: a two-class argmax output blended as its difference
            fold = pipeline.folds_two_classes() and out.shape[1] == 2
            channels = 1 if fold else out.shape[1]
            blender = Blender(channels, padded.shape[1:], spec.patch, spec.blend, spec.sigma_scale)
        add = blender.add_difference if fold else blender.add
        for window, probs in zip(chunk, out, strict=True):
            _cpu(clock, "blend", add, window, probs)
    return _cpu(clock, "blend", blender.result, pad), len(windows), fold


def _encode(result: Any) -> list:
    return [_mask_message(m) for m in result.masks]


def cpu_stages(model_dir: Path, source: VolumeSource, repeats: int) -> dict[str, Any]:
    """Median CPU ms per stage over `repeats` runs (after one warm-up) of one volume."""
    config = load_config(model_dir)
    pipeline = VolumePipeline(config)
    model = OnnxModel(model_dir / "1" / config.model_file, config.runtime)
    runs = []
    for _ in range(repeats + 1):
        clock: dict[str, float] = {}
        volume = _cpu(clock, "decode", assemble, source, 0)
        tensor, meta = _cpu(clock, "preprocess", pipeline.preprocess, volume)
        mean, windows = ProbabilityMean(), 0
        for axes in pipeline.passes():
            output, count, fold = _pass(model, pipeline, flip_spatial(tensor, axes), clock)
            windows += count
            if fold:
                probs = _cpu(clock, "postprocess", pipeline.difference_probability, output)
            else:
                probs = _cpu(clock, "postprocess", pipeline.probabilities, output, True)
            _cpu(clock, "postprocess", mean.add, probs, axes)
        finish = pipeline.postprocess_two_classes if fold else pipeline.postprocess_probabilities
        result = _cpu(clock, "postprocess", finish, mean.result(), meta)
        _cpu(clock, "encode", _encode, result)
        runs.append(clock)
    stages = sorted({k for r in runs for k in r})
    row = {k: float(np.median([r.get(k, 0.0) for r in runs[1:]])) for k in stages}
    row["total"] = float(sum(row[k] for k in stages))
    row["windows"] = windows
    row["non_inference_share"] = 1.0 - row.get("inference", 0.0) / row["total"]
    return row


def print_cpu_table(rows: dict[str, dict]) -> None:
    """CPU ms per stage and the non-inference share of the CPU time."""
    stages = ("decode", "preprocess", "inference", "blend", "postprocess", "encode", "total")
    print(f"\nCPU time per volume, in-process (ms; {'/'.join(stages)})")
    print(f"{'case':52} " + " ".join(f"{s:>11}" for s in stages) + f" {'non-inf':>8}")
    for name, r in rows.items():
        values = " ".join(f"{r.get(s, 0.0):11.1f}" for s in stages)
        print(f"{name:52} {values} {r['non_inference_share']:8.1%}")
