"""Explain's one pass against plain inference in CPU time, two explain graphs interleaved.

    python -m bench.explain_cpu --before DIR [--boxes 1,3,6,9,10] [--calls 15] [--out FILE]

On a machine shared with other work, wall-clock ratios (`bench.explain --boxes`) swing with the
load (4.3-7.3x at 9 boxes in one hour at load 3-4); the thread's CPU time moves far less.
ONNX Runtime runs on one intra-op thread here, in the calling thread, so `time.thread_time`
holds the model's work. For blood-cells on BloodImage_00007.jpg: plain = preprocess + the plain
model + postprocess; one pass (as `Explain` does with the split graph) = preprocess + forward
part + postprocess + backward part for the K strongest output rows + K heat maps. "before": the
explain graph in `DIR/model.explain.onnx` with its split parts beside it (say, from
``git show <commit>:models/blood-cells/1/...``); "after": the bundled one. Calls rotate in
alternating order; medians. Also prints how far the two graphs' CAMs and heat maps differ.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.explain_boxes import IMAGE, _boxes
from vision.config import load_config
from vision.io import decode_image
from vision.loader import load_model
from vision.paths import PROJECT_ROOT
from vision.runtime import OnnxModel
from vision.xai.cam import heatmap
from vision.xai.explainer import Explainer

MODEL_DIR = PROJECT_ROOT / "models" / "blood-cells"


def _timed(fn) -> tuple[float, float]:
    """(CPU ms of this thread, wall ms) of one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return (time.thread_time() - cpu) * 1000.0, (time.perf_counter() - wall) * 1000.0


def run(before: Path, counts: list[int], calls: int) -> dict:
    """Measure and print; the figures."""
    config = load_config(MODEL_DIR)
    loaded = load_model(MODEL_DIR, explain=False, providers=("cpu",), config=config)
    runtime = replace(loaded.session.spec, intra_op_threads=1, allow_spinning=False)
    plain_session = OnnxModel(MODEL_DIR / "1" / config.model_file, runtime)
    graphs = {
        "before": before / "model.explain.onnx",
        "after": MODEL_DIR / "1" / "model.explain.onnx",
    }
    explainers = {n: Explainer(config, OnnxModel(p, runtime)) for n, p in graphs.items()}
    if any(e.split is None for e in explainers.values()):
        raise SystemExit("both graphs need current split parts (python -m vision.xai.split_graph)")
    pipeline, image = loaded.pipeline, decode_image(IMAGE.read_bytes())

    def plain() -> dict:
        tensor, meta = pipeline.preprocess(image)
        outputs = plain_session.run({"images": tensor[None]})
        pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
        return outputs

    def one_pass(name: str, found: list) -> tuple[np.ndarray, list[np.ndarray]]:
        split = explainers[name].split
        tensor, meta = pipeline.preprocess(image)
        outputs, state = split.forward(tensor[None])
        pipeline.postprocess({n: v[0] for n, v in outputs.items()}, meta)
        classes = np.array([d.class_id for d in found], dtype=np.int64)
        anchors = np.array([d.anchor for d in found], dtype=np.int64)
        cams = split.cams(state, classes, anchors)
        return cams, [heatmap(c, meta) for c in cams]

    results: dict = {"load": os.getloadavg(), "before": str(before), "counts": {}}
    outputs = plain()
    for k in counts:
        found = _boxes(outputs, k, config.labels).detections
        (cam_b, heat_b), (cam_a, heat_a) = one_pass("before", found), one_pass("after", found)
        paths = {"plain": plain}
        paths |= {n: functools.partial(one_pass, n, found) for n in ("before", "after")}
        times: dict[str, list] = {n: [] for n in paths}
        for i in range(calls):
            for name in list(paths) if i % 2 == 0 else list(paths)[::-1]:
                times[name].append(_timed(paths[name]))
        row = {n: {"cpu_ms": statistics.median(t[0] for t in v)} for n, v in times.items()}
        for n, v in times.items():
            row[n]["wall_ms"] = statistics.median(t[1] for t in v)
        row["cam_rel_diff"] = float(np.abs(cam_a - cam_b).max() / np.abs(cam_b).max())
        pairs = zip(heat_a, heat_b, strict=True)
        row["heat_max_diff"] = max(float(np.abs(a - b).max()) for a, b in pairs)
        base = row["plain"]["cpu_ms"]
        line = f"boxes {k:>2}: plain {base:5.1f} CPU-ms"
        for n in ("before", "after"):
            line += f" | {n} {row[n]['cpu_ms']:5.1f} = {row[n]['cpu_ms'] / base:4.2f}x"
        print(f"{line} | cam rel diff {row['cam_rel_diff']:.1e}", flush=True)
        results["counts"][str(k)] = row
    results["load_end"] = os.getloadavg()
    print(f"load {results['load']} -> {results['load_end']}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, type=Path, help="folder of the other graph")
    parser.add_argument("--boxes", default="1,3,6,9,10", help="comma-separated box counts")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per path")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    results = run(args.before, [int(c) for c in args.boxes.split(",") if c], args.calls)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
