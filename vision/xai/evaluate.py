"""`vision xai-eval`: how good are a model's Grad-CAM explanations on its test split?

Per target (one explained finding of one test image; see `vision.xai.eval_data`):

1. deletion / insertion AUC (`vision.xai.faithfulness`), Grad-CAM order vs random maps made at
   the CAM's own resolution and upsampled the same way (`seeds` of them); scored through the
   plain ONNX model and the server's pipeline (torch-free);
2. pointing game and IoU of the thresholded map against the truth (vessel mask; the matched
   truth box of a detection), Grad-CAM vs the same random maps;
3. model-randomisation check (`vision.xai.sanity`) on the eager checkpoint, when there is one.

Writes `xai_eval.json`, `deletion_insertion.png` and `randomisation.png` into `out`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vision.config import ModelConfig, load_config
from vision.errors import VisionError
from vision.loader import load_model
from vision.paths import PROJECT_ROOT
from vision.reports import write_json
from vision.runtime import OnnxModel
from vision.xai import faithfulness as fa
from vision.xai.cam import heatmap
from vision.xai.eval_data import Scorer, Target, explain_item, load_items

log = logging.getLogger(__name__)
REPORT_FILE = "xai_eval.json"
CHECKPOINTS = {"pcb-defects": "runs/pcb-defects-ft/best.pt"}  # else runs/<name>/best.pt


@dataclass
class Options:
    """Budgets and knobs of one evaluation (see `vision xai-eval --help`)."""

    limit: int = 8
    targets: int = 1
    steps: int = 20
    seeds: int = 3
    tolerance: int = 15
    threshold: float = 0.5
    rand_steps: int = 12
    rand_images: int = 4
    checkpoint: Path | None = None
    randomisation: bool = True
    threads: int = 1
    seed: int = 0
    split: str = "test"


def _mean(values: list) -> Any:
    """Mean over the first axis, as a float or a list of floats (JSON-ready)."""
    mean = np.mean(np.asarray(values, dtype=np.float64), axis=0)
    return mean.tolist() if isinstance(mean, np.ndarray) else float(mean)


def evaluate_target(
    target: Target, scorer: Scorer, cam_shape: tuple[int, int], opts: Options, seed: int
) -> dict:
    """Deletion / insertion curves and AUCs, pointing and IoU of one target vs random maps."""
    rng = np.random.default_rng(seed)
    pixels = target.item.image.pixels
    baselines = (fa.mean_image(pixels), fa.blurred(pixels))
    fractions = fa.step_fractions(opts.steps)
    randoms = [heatmap(fa.random_heat(cam_shape, rng), target.meta) for _ in range(opts.seeds)]
    curves = [
        fa.deletion_insertion(
            pixels, heat, lambda x: scorer.score(x, target), opts.steps, rng, baselines
        )
        for heat in [target.heat, *randoms]
    ]
    record: dict[str, Any] = {"image": target.item.name, "class_id": target.class_id}
    if target.detection is not None:
        record["score"] = round(target.detection.score, 4)
    for kind in ("deletion", "insertion"):
        aucs = [fa.auc(c[kind], fractions) for c in curves]
        record[kind] = {"gradcam": aucs[0], "random": float(np.mean(aucs[1:]))}
        record[f"{kind}_curve"] = {
            "gradcam": curves[0][kind].tolist(),
            "random": _mean([c[kind] for c in curves[1:]]),
        }
    if target.truth is not None and target.truth.any():
        record["pointing"] = {
            "gradcam": fa.pointing_hit(target.heat, target.truth, opts.tolerance),
            "random": _mean([fa.pointing_hit(h, target.truth, opts.tolerance) for h in randoms]),
        }
        ious = [fa.map_ious(h, target.truth, opts.threshold) for h in [target.heat, *randoms]]
        record["iou"] = {
            "gradcam": ious[0],
            "random": {k: _mean([r[k] for r in ious[1:]]) for k in ious[0]},
        }
    return record


def wilson(hits: int, n: int) -> list[float] | None:
    """95 % Wilson score interval of a hit rate (None without trials)."""
    if n == 0:
        return None
    p, z = hits / n, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(centre - half), 4), round(float(centre + half), 4)]


def bootstrap_ci(values: list[float], seed: int = 0, draws: int = 2000) -> list[float] | None:
    """95 % percentile bootstrap interval of a mean (None without values)."""
    if not values:
        return None
    data = np.asarray(values, dtype=np.float64)
    means = np.random.default_rng(seed).choice(data, (draws, data.size)).mean(axis=1)
    return [round(float(v), 4) for v in np.percentile(means, [2.5, 97.5])]


def _faithfulness(records: list[dict], kind: str) -> dict:
    better = np.less if kind == "deletion" else np.greater
    grad = [r[kind]["gradcam"] for r in records]
    rand = [r[kind]["random"] for r in records]
    return {
        "n": len(records),
        "gradcam_auc": _mean(grad),
        "gradcam_auc_ci95": bootstrap_ci(grad),
        "random_auc": _mean(rand),
        "targets_beating_random": int(better(grad, rand).sum()),
        "goal_met": bool(better(_mean(grad), _mean(rand))),
    }


def _pointing(records: list[dict], tolerance: int) -> dict:
    checked = [r for r in records if "pointing" in r]
    hits = int(sum(bool(r["pointing"]["gradcam"]) for r in checked))
    return {
        "tolerance_px": tolerance,
        "targets": len(checked),
        "n": len(checked),
        "hits": hits,
        "gradcam_hit_rate": hits / len(checked) if checked else None,
        "gradcam_hit_rate_ci95": wilson(hits, len(checked)),
        "random_hit_rate": _mean([r["pointing"]["random"] for r in checked]) if checked else None,
    }


def per_class(records: list[dict], labels: list[str], tolerance: int) -> dict:
    """Pointing game and deletion / insertion AUCs of each explained class, with n."""
    out = {}
    for class_id in sorted({r["class_id"] for r in records}):
        mine = [r for r in records if r["class_id"] == class_id]
        label = labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
        out[label] = {
            "class_id": class_id,
            "targets": len(mine),
            "pointing": _pointing(mine, tolerance),
            **{k: _faithfulness(mine, k) for k in ("deletion", "insertion")},
        }
    return out


def summarise(records: list[dict], opts: Options, labels: list[str] | None = None) -> dict:
    """Means over targets (with n and 95 % intervals), per class, and whether Grad-CAM beats
    random."""
    out: dict[str, Any] = {
        "targets": len(records),
        "fractions": fa.step_fractions(opts.steps).tolist(),
    }
    for kind in ("deletion", "insertion"):
        out[kind] = {
            **_faithfulness(records, kind),
            "curve_gradcam": _mean([r[f"{kind}_curve"]["gradcam"] for r in records]),
            "curve_random": _mean([r[f"{kind}_curve"]["random"] for r in records]),
        }
    out["pointing"] = _pointing(records, opts.tolerance)
    checked = [r for r in records if "pointing" in r]
    out["iou"] = {"threshold": opts.threshold, "targets": len(checked)}
    for who in ("gradcam", "random"):
        for key in ("iou_threshold", "iou_top_area"):
            out["iou"][f"{who}_{key}"] = (
                _mean([r["iou"][who][key] for r in checked]) if checked else None
            )
    out["per_class"] = per_class(records, labels or [], opts.tolerance)
    return out


def _runtime(config: ModelConfig, threads: int) -> Any:
    return dataclasses.replace(
        config.runtime, intra_op_threads=threads, inter_op_threads=1, warmup=False
    )


def cam_shape(session: OnnxModel, config: ModelConfig) -> tuple[int, int]:
    """The explain graph's CAM grid (h, w); input / 8 when the graph leaves it dynamic."""
    shape = {o.name: o.shape for o in session.outputs}["cam"][1:]
    if len(shape) == 2 and min(shape) > 0:
        return int(shape[0]), int(shape[1])
    return config.input.height // 8, config.input.width // 8


def default_checkpoint(name: str) -> Path:
    """Where a reference model's training checkpoint is when it was trained here."""
    return PROJECT_ROOT / CHECKPOINTS.get(name, f"runs/{name}/best.pt")


def _has_shipped_weights(model_dir: Path) -> bool:
    from vision.model_card import read_model_card

    try:
        weights = read_model_card(model_dir).weights
    except (OSError, ValueError, VisionError):
        return False
    return bool(weights) and weights.get("parity") is not None


def randomisation(
    config: ModelConfig,
    targets: list[Target],
    explained: OnnxModel,
    opts: Options,
    model_dir: Path | None = None,
) -> dict:
    """The torch randomisation check, or why it was skipped (torch is imported only here).

    The model is the checkpoint (`--checkpoint`, else the recipe's `runs/` file) or, without
    one, the weights shipped beside the ONNX file (`weights.safetensors`, in the model card);
    `explained`: the explain graph, the network those weights must reproduce.
    """
    if not opts.randomisation:
        return {"skipped": "turned off (--no-randomisation)"}
    checkpoint = Path(opts.checkpoint) if opts.checkpoint else default_checkpoint(config.name)
    shipped = not opts.checkpoint and model_dir is not None and _has_shipped_weights(model_dir)
    if not checkpoint.is_file() and not shipped:
        return {"skipped": f"no torch checkpoint at {checkpoint} (give --checkpoint)"}
    if not targets:
        return {"skipped": "no targets"}
    from vision.xai.sanity import run_randomisation

    return run_randomisation(config, targets, explained, checkpoint, opts, model_dir)


def evaluate_model(repo: Path, name: str, out: Path, opts: Options, version: int = 0) -> dict:
    """Run all three checks on `name`; write the JSON report and the plots into `out`."""
    from vision.xai.eval_plots import plot_curves, plot_randomisation

    start = time.perf_counter()
    model_dir = Path(repo) / name
    config = load_config(model_dir)
    runtime = _runtime(config, opts.threads)
    loaded = load_model(model_dir, version, explain=True, runtime=runtime, config=config)
    version = int(loaded.version)
    assert loaded.explainer is not None
    explainer, plain, session = loaded.explainer, loaded.session, loaded.explainer.session
    scorer = Scorer(config, plain, config.batching.max_batch_size)
    grid = cam_shape(session, config)
    items = load_items(config, model_dir, opts.limit, opts.split)
    targets, records = [], []
    for item in tqdm(items, desc=f"xai-eval {name}", unit="image"):
        for target in explain_item(item, explainer, plain, opts.targets):
            records.append(evaluate_target(target, scorer, grid, opts, opts.seed + len(records)))
            targets.append(target)
    report: dict[str, Any] = {
        "model": name,
        "version": version,
        "task": config.task,
        "method": config.explain.method,
        "target_layer": config.explain.target_layer,
        "split": opts.split,
        "images": len(items),
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "checkpoint"},
        "baselines": {"deletion": "per-channel mean image", "insertion": "Gaussian blur"},
        **summarise(records, opts, list(config.labels)),
    }
    report["randomisation"] = randomisation(
        config, targets[: opts.rand_images], session, opts, Path(repo) / name
    )
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = [plot_curves(report, out / "deletion_insertion.png").name]
    if report["randomisation"].get("steps"):
        report["plots"].append(plot_randomisation(report, out / "randomisation.png").name)
    report["per_target"] = [
        {k: v for k, v in r.items() if not k.endswith("_curve")} for r in records
    ]
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_json(report, out / REPORT_FILE)
    return report
