"""Heat maps per box count against plain inference, in process (issue 19 item 4).

    python -m bench.explain --boxes 1,3,6,10 [--threads T] [--old-graph PATH]

For blood-cells on BCCD BloodImage_00007.jpg: plain = preprocess + model + postprocess (as the
server's Detect does, no wire); explain(K) = plain + `Explainer.explain_detections` for K boxes
(the K strongest output rows, so any K can be asked of one image), heat maps at the original
size. "one pass": what `Explain` does with the split graph (`vision.xai.split_graph`):
preprocess + the graph's forward part + postprocess + its backward part for the K boxes + heat
maps (no plain run). The bundled shared-forward graph and, with `--old-graph`, another graph
run interleaved, same image, same targets: labelled "per-target" when it takes the image once
per target (the graph before issue 19,
`git show 658326b~1:models/blood-cells/1/model.explain.onnx`), else "previous" (e.g. session
15's dense-backward graph, `git show 29930cd~1:...`; put its `model.explain.optimized.onnx`
beside it so both load a stored optimised graph; with its split parts beside it, its one pass
is timed too, "previous one pass"). Medians of `--calls`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from vision.config import load_config
from vision.io import decode_image
from vision.loader import load_model
from vision.paths import PROJECT_ROOT, datasets_root
from vision.runtime import OnnxModel
from vision.types import Detection, DetectionResult
from vision.xai.cam import heatmap
from vision.xai.explainer import Explainer, heat_to_float16_bytes

GOAL = 4.0
IMAGE = datasets_root() / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00007.jpg"


def _boxes(outputs: dict, k: int, labels: list[str]) -> DetectionResult:
    """K detections on the K strongest output rows (distinct anchors)."""
    scores = outputs["output0"][0, 4:, :]
    best = scores.max(0)
    rows = np.argsort(-best)[:k]
    found = []
    for a in rows:
        cls = int(scores[:, a].argmax())
        found.append(Detection(0.0, 0.0, 1.0, 1.0, float(best[a]), cls, labels[cls], int(a)))
    return DetectionResult(found)


def _heat_stages(ex: Explainer, tensor, meta, boxes, k: int, calls: int) -> dict[str, float]:
    """Medians (ms) of what follows the graph: the K heat maps at the original image size
    (inside `explain_detections`) and their float16 wire bytes (the servicer's part)."""
    found = ex.explain_detections(tensor, meta, boxes, max_findings=k)
    feeds = {
        "images": tensor[None],
        "target_class": np.array([e.class_id for e in found], dtype=np.int64),
        "target_anchor": np.array([e.detection.anchor for e in found], dtype=np.int64),
    }
    cams = ex.session.run(feeds)["cam"]
    heat = _median_ms(lambda: [heatmap(c, meta) for c in cams], calls)
    wire = _median_ms(lambda: [heat_to_float16_bytes(e.heat) for e in found], calls)
    return {"heatmaps_ms": statistics.median(heat), "float16_ms": statistics.median(wire)}


def _one_pass(ex: Explainer, pipeline, image, boxes: DetectionResult, k: int) -> None:
    """Explain's work with the split graph: one forward (whose outputs are postprocessed, as
    the data plane does, to find the boxes), then the backward for the K `boxes`."""
    tensor, meta = pipeline.preprocess(image)
    outputs, state = ex.split.forward(tensor[None])
    pipeline.postprocess({n: v[0] for n, v in outputs.items()}, meta)
    found = boxes.detections[:k]
    classes = np.array([d.class_id for d in found], dtype=np.int64)
    anchors = np.array([d.anchor for d in found], dtype=np.int64)
    [heatmap(c, meta) for c in ex.split.cams(state, classes, anchors)]


def _one_pass_key(name: str) -> str:
    """The figure's key for the one-pass path of explainer `name` ("one_pass" for the bundled
    graph; "previous_one_pass" for an `--old-graph` with current split parts beside it)."""
    return "one_pass" if name == "shared" else f"{name}_one_pass"


def _old_label(path: Path, runtime) -> str:
    """ "per-target" for a graph that takes the image once per target, else "previous" (an
    earlier shared-forward graph)."""
    shared = OnnxModel(path, runtime).inputs[0].shape[:1] == (1,)
    return "previous" if shared else "per-target"


def _median_ms(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def run(
    counts: list[int],
    calls: int,
    threads: int,
    old_graph: str | None,
    out: Path | None,
    model_dir: Path | None = None,
    image_path: Path | None = None,
) -> dict:
    """Measure, print the ratios, write `out` (None: no file); the figures. `model_dir`,
    `image_path`: default bundled blood-cells and BloodImage_00007.jpg."""
    model_dir = model_dir or PROJECT_ROOT / "models" / "blood-cells"
    image_path = image_path or IMAGE
    config = load_config(model_dir)
    loaded = load_model(model_dir, explain=False, providers=("cpu",), config=config)
    runtime = loaded.session.spec
    if threads:
        from dataclasses import replace

        runtime = replace(runtime, intra_op_threads=threads, allow_spinning=False)
    graphs = {"shared": model_dir / "1" / config.explain.file}
    if old_graph:
        graphs[_old_label(Path(old_graph), runtime)] = Path(old_graph)
    explainers = {n: Explainer(config, OnnxModel(p, runtime)) for n, p in graphs.items()}
    plain_session = OnnxModel(model_dir / "1" / config.model_file, runtime)
    image = decode_image(image_path.read_bytes())

    def plain() -> tuple:
        tensor, meta = loaded.pipeline.preprocess(image)
        outputs = plain_session.run({"images": tensor[None]})
        loaded.pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
        return tensor, meta, outputs

    tensor, meta, outputs = plain()
    results = {"model": config.name, "target_layer": config.explain.target_layer}
    results |= {"image": image_path.name, "threads": threads, "load": os.getloadavg(), "counts": {}}
    for k in counts:
        boxes = _boxes(outputs, k, config.labels)
        row = {"plain_ms": []}
        for name in explainers:
            row[name + "_ms"] = []
        one_pass = [n for n, ex in explainers.items() if ex.split is not None]
        for name in one_pass:
            row[_one_pass_key(name) + "_ms"] = []
        for _ in range(2):  # warm-up
            for ex in explainers.values():
                ex.explain_detections(tensor, meta, boxes, max_findings=k)
        for _ in range(calls):  # interleaved
            row["plain_ms"] += _median_ms(plain, 1)
            for name, ex in explainers.items():
                row[name + "_ms"] += _median_ms(
                    lambda ex=ex, boxes=boxes, k=k: (
                        plain(),
                        ex.explain_detections(tensor, meta, boxes, max_findings=k),
                    ),
                    1,
                )
            for name in one_pass:
                row[_one_pass_key(name) + "_ms"] += _median_ms(
                    lambda ex=explainers[name], boxes=boxes, k=k: _one_pass(
                        ex, loaded.pipeline, image, boxes, k
                    ),
                    1,
                )
        summary = {n: statistics.median(v) for n, v in row.items()}
        summary |= _heat_stages(explainers["shared"], tensor, meta, boxes, k, calls)
        base = summary["plain_ms"]
        line = f"boxes {k:>2}: plain {base:6.1f} ms"
        for name in explainers:
            ratio = summary[name + "_ms"] / base
            summary[name + "_x_plain"] = ratio
            line += f" | {name} {summary[name + '_ms']:7.1f} ms = {ratio:5.2f}x plain"
        for name in one_pass:
            key = _one_pass_key(name)
            summary[key + "_x_plain"] = summary[key + "_ms"] / base
            line += f" | {key.replace('_', ' ')} {summary[key + '_ms']:7.1f} ms = "
            line += f"{summary[key + '_x_plain']:5.2f}x plain"
        best = summary.get("one_pass_x_plain", summary["shared_x_plain"])
        ok = "meets" if best <= GOAL else "misses"
        print(f"{line} ({ok} goal <= {GOAL:g}x)", flush=True)
        print(
            f"          shared: heat maps {summary['heatmaps_ms']:5.1f} ms, float16 for the wire "
            f"{summary['float16_ms']:5.1f} ms (in the shared figure: the heat maps only)",
            flush=True,
        )
        results["counts"][str(k)] = summary
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}")
    return results
