"""Evaluate a served detector the way the server runs it: `vision.loader` (decode, Pipeline,
ONNX Runtime).

Reports mAP@0.5 and mAP@[.5:.95] (pycocotools), per-class AP, the DeepPCB protocol for DeepPCB
data, a PR-curve PNG, a confusion-matrix PNG and a JSON report; updates the model card.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from vision.datasets.detection import Sample, load_dataset
from vision.datasets.provenance import assert_no_synthetic
from vision.detect.metrics import (
    Boxes,
    ap_per_class,
    best_f,
    coco_map,
    deeppcb_protocol,
    f_score,
)
from vision.detect.plots import plot_confusion, plot_pr_curves
from vision.errors import ConfigError, DatasetNotFoundError
from vision.loader import LoadedModel, load_model
from vision.paths import datasets_root, default_repository

EVAL_SCORE_THRESHOLD = 0.001  # keep low-confidence boxes for AP; F-score uses the config's


def predict_all(
    model: LoadedModel, samples: list[Sample], batch: int = 0
) -> tuple[list[Boxes], float]:
    """Detections per sample in original-image coordinates through the server's path (decode,
    Pipeline, session; AP's low score threshold), and the mean latency per image (ms)."""
    model = model.with_postprocess(score_threshold=EVAL_SCORE_THRESHOLD)
    batch = batch or max(1, model.config.batching.max_batch_size)
    preds: list[Boxes] = []
    start = time.perf_counter()
    for i in range(0, len(samples), batch):
        images = [s.image.read_bytes() for s in samples[i : i + batch]]
        preds += [_boxes(result.detections) for result in model.predict_many(images, batch)]
    latency = (time.perf_counter() - start) * 1000 / max(len(samples), 1)
    return preds, latency


def _boxes(dets: list) -> Boxes:
    return Boxes(
        np.array([[d.x1, d.y1, d.x2, d.y2] for d in dets], np.float32).reshape(-1, 4),
        np.array([d.class_id for d in dets], np.int64),
        np.array([d.score for d in dets], np.float32),
    )


def compute_metrics(
    preds: list[Boxes],
    truths: list[Boxes],
    labels: tuple[str, ...],
    score_thr: float,
    deeppcb: bool,
) -> dict:
    """All metrics of one evaluation."""
    nc = len(labels)
    metrics = coco_map(preds, truths, labels)
    ap50 = ap_per_class(preds, truths, nc, 0.5)
    metrics["voc_ap50_per_class"] = dict(zip(labels, np.round(ap50, 4).tolist(), strict=True))
    metrics["voc_map50"] = float(ap50.mean())
    metrics["at_config_threshold"] = {
        "score_threshold": score_thr,
        **f_score(preds, truths, nc, 0.5, score_thr),
    }
    metrics["best_f_iou50"] = best_f(preds, truths, nc, 0.5, False)
    if deeppcb:
        proto = deeppcb_protocol(preds, truths, nc, score_thr)
        proto["ap"] = dict(zip(labels, np.round(proto["ap"], 4).tolist(), strict=True))
        proto["best_f"] = best_f(preds, truths, nc, 0.33, True)
        metrics["deeppcb"] = proto
    return metrics


def dataset_of(name: str, fmt: str | None = None, data: Path | None = None) -> tuple[str, Path]:
    """The format and folder of a model's evaluation data: given, else its recipe's; the folder
    must exist (DatasetNotFoundError says where it looked)."""
    from vision.detect.recipes import RECIPES

    if fmt and data:
        found = fmt, Path(data)
    elif name in RECIPES:
        found = RECIPES[name].format, Path(data) if data else RECIPES[name].data_path()
    else:
        raise ConfigError(f"model {name!r} has no recipe: give --format and --data")
    if not found[1].exists():
        raise DatasetNotFoundError(
            f"{found[1]}: dataset not found (shared datasets root: {datasets_root()}; set "
            "VISION_DATASETS or give --data)"
        )
    return found


def headline(metrics: dict) -> dict[str, float]:
    """The flat numbers for the card's summary table."""
    flat = {"mAP50": metrics["map50"], "mAP50_95": metrics["map50_95"]}
    flat.update({f"AP50_{k}": v for k, v in metrics["ap50_per_class"].items()})
    flat["F1_at_threshold"] = metrics["at_config_threshold"]["f_score"]
    if "deeppcb" in metrics:
        flat["DeepPCB_mAP"] = metrics["deeppcb"]["map"]
        flat["DeepPCB_F"] = metrics["deeppcb"]["f_score"]
    return {k: round(float(v), 4) for k, v in flat.items()}


def _update_card(model_dir: Path, version: int, split: str, metrics: dict, n: int) -> None:
    from vision.export import read_card, write_card

    card = read_card(model_dir)
    card["metrics"] = {split: headline(metrics)}
    card["evaluation"] = {"split": split, "images": n, "version": version, **metrics}
    write_card(model_dir, card)


def evaluate_detector(
    name: str,
    repo: Path | None = None,
    version: int | str | None = None,
    split: str = "test",
    data: Path | None = None,
    fmt: str | None = None,
    limit: int = 0,
    out: Path | None = None,
    update_card: bool = True,
) -> dict:
    """`vision eval --model NAME` for a detector: through `vision.loader`; writes report.json,
    the PR curves and the confusion matrix into `out` (default reports/NAME); returns the
    report."""
    model_dir = Path(repo or default_repository()) / name
    model = load_model(model_dir, version, explain=False)
    config = model.config
    fmt, data = dataset_of(name, fmt, data)
    samples, _ = load_dataset(fmt, data, split)
    samples = samples[:limit] if limit else samples
    assert_no_synthetic([s.image for s in samples], split)
    preds, latency = predict_all(model, samples)
    truths = [Boxes.truth(s.boxes, s.labels) for s in samples]
    threshold = config.postprocess.score_threshold
    metrics = compute_metrics(preds, truths, config.labels, threshold, deeppcb=fmt == "deeppcb")
    metrics["latency_ms_per_image_cpu"] = round(latency, 2)
    out = Path(out or Path("reports") / name)
    out.mkdir(parents=True, exist_ok=True)
    plot_pr_curves(
        preds, truths, config.labels, 0.33 if fmt == "deeppcb" else 0.5, out / "pr_curve.png"
    )
    plot_confusion(preds, truths, config.labels, threshold, out / "confusion_matrix.png")
    report = {
        "model": name,
        "version": int(model.version),
        "split": split,
        "format": fmt,
        "images": len(samples),
        "providers": model.providers,
        **metrics,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if update_card:
        _update_card(model_dir, int(model.version), split, metrics, len(samples))
    return report
