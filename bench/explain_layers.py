"""Grad-CAM target-layer candidates of a detector, scored on the VALIDATION split (issue 19
item 4, issue 20 item 7).

    python -m bench.explain_layers --model blood-cells [--layers A,B;C] [--limit 6] [--calls 5]

For each candidate layer (``;``-separated; one candidate may name several layers, ``a,b``,
see `vision.xai.layers`): a throw-away copy of the bundled model folder under a temp dir, its
explain graph exported there from the shipped weights (`add_explain_graph`, parity gate on:
ONNX vs eager and vs pytorch-grad-cam r >= 0.99), then

* `vision xai-eval --split val` (deletion / insertion AUC with 95 % CI, pointing game with
  Wilson CI, cascading randomisation judged by |rho| inside the box), and
* heat maps per box count vs plain inference in process (`bench/explain_boxes.py`).

The bundled model is never touched. Figures go to bench/results/explain-layers-<model>.json.

Choice rule (fixed before any candidate was scored): among candidates whose validation
deletion AUC is not above the current layer's 95 % CI upper bound, whose insertion AUC is not
below its CI lower bound and whose pointing hit rate is not below its Wilson lower bound, take
the cheapest at 10 boxes among those that pass randomisation (|rho| < 0.3 after the top
layer); if none passes, the cheapest of them; if none qualifies, keep the current layer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from vision.config import load_config
from vision.paths import PROJECT_ROOT
from vision.xai.eval_data import _detection_samples

DEFAULT_LAYERS = "backbone.stages.0;backbone.stages.2;smooth.0,smooth.1,smooth.2"
COPIED = ("config.yaml", "card.json", "MODEL_CARD.md")
COPIED_VERSION = ("model.onnx", "model.optimized.onnx", "weights.safetensors")


def copy_model(name: str, root: Path) -> Path:
    """The bundled model folder without its explain graph, under `root`."""
    src, dst = PROJECT_ROOT / "models" / name, root / name
    (dst / "1").mkdir(parents=True)
    for f in COPIED:
        shutil.copy2(src / f, dst / f)
    for f in COPIED_VERSION:
        if (src / "1" / f).is_file():
            shutil.copy2(src / "1" / f, dst / "1" / f)
    return dst


def val_image(name: str) -> Path:
    """The first validation image of the model's recipe (the export example)."""
    from vision.detect.recipes import RECIPES

    return Path(_detection_samples(RECIPES[name], "val")[0].image)


def score(name: str, layer: str, args: argparse.Namespace, tmp: Path) -> dict:
    """Export the graph for `layer` in a copy; the validation xai-eval and the cost figures."""
    from bench.explain_boxes import run as cost
    from vision.xai.evaluate import Options, evaluate_model
    from vision.xai.export import add_explain_graph

    repo = tmp / layer.replace(",", "+")
    model_dir = copy_model(name, repo)
    image = val_image(name)
    method = load_config(model_dir).explain.method  # the served method (HiResCAM)
    entry = add_explain_graph(repo, name, None, method=method, target_layer=layer, image=image)
    opts = Options(
        limit=args.limit,
        targets=args.targets,
        steps=args.steps,
        seeds=args.seeds,
        rand_steps=args.rand_steps,
        rand_images=args.rand_images,
        threads=args.threads,
        split="val",
    )
    report = evaluate_model(repo, name, repo / "xai", opts)
    costs = cost(args.boxes, args.calls, args.threads, None, None, model_dir, image)
    return {
        "layer": layer,
        "parity": entry["parity"],
        "explain_bytes": entry["bytes"],
        "xai_eval_val": _headline(report),
        "cost": costs,
    }


def _headline(report: dict) -> dict:
    rand = report["randomisation"]
    out = {k: report[k] for k in ("split", "images", "targets", "options")}
    for k in ("deletion", "insertion"):
        out[k] = {f: report[k][f] for f in ("n", "gradcam_auc", "gradcam_auc_ci95", "random_auc")}
    out["pointing"] = {
        k: report["pointing"][k] for k in ("n", "hits", "gradcam_hit_rate", "gradcam_hit_rate_ci95")
    }
    out["randomisation"] = rand.get("skipped") or {
        "verdict": rand["verdict"],
        "steps": [
            {k: s.get(k) for k in ("down_to", "abs_spearman_mean", "box_abs_spearman_mean")}
            for s in rand["steps"]
        ],
    }
    return out


def main(argv: list[str] | None = None) -> int:
    """Score each candidate; print and write the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="blood-cells")
    p.add_argument("--layers", default=DEFAULT_LAYERS, help="';'-separated candidates")
    p.add_argument("--limit", type=int, default=6, help="validation images")
    p.add_argument("--targets", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rand-steps", type=int, default=6)
    p.add_argument("--rand-images", type=int, default=6)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--boxes", default="1,3,6,10")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default: bench/results/...")
    args = p.parse_args(argv)
    args.boxes = [int(b) for b in args.boxes.split(",") if b]
    import torch

    torch.set_num_threads(args.threads)
    out = args.out or PROJECT_ROOT / "bench" / "results" / f"explain-layers-{args.model}.json"
    results: dict = {"model": args.model, "load": os.getloadavg(), "candidates": []}
    with tempfile.TemporaryDirectory(prefix="explain-layers-") as tmp:
        for layer in [c for c in args.layers.split(";") if c]:
            try:
                found = score(args.model, layer, args, Path(tmp))
            except RuntimeError as exc:  # the parity gate refused the graph
                found = {"layer": layer, "failed": str(exc)}
            results["candidates"].append(found)
            print(json.dumps({k: v for k, v in found.items() if k != "cost"}, indent=1))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
