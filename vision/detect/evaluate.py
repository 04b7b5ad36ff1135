"""Evaluate a served detector the way the server runs it: decode, Pipeline, ONNX Runtime.

Reports mAP@0.5 and mAP@[.5:.95] (pycocotools), per-class AP, the DeepPCB protocol for DeepPCB
data, a PR-curve PNG, a confusion-matrix PNG and a JSON report; updates the model card.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from vision.config import ModelConfig, load_config
from vision.detect.data import Sample, load_dataset
from vision.detect.metrics import (
    Boxes,
    ap_per_class,
    best_f,
    coco_map,
    deeppcb_protocol,
    f_score,
)
from vision.detect.plots import plot_confusion, plot_pr_curves
from vision.paths import datasets_root, default_repository, latest_version
from vision.runtime import OnnxModel
from vision.synth.provenance import assert_no_synthetic

EVAL_SCORE_THRESHOLD = 0.001  # keep low-confidence boxes for AP; F-score uses the config's


def _pipeline(config: ModelConfig):
    """The serving pipeline with a low score threshold (AP needs the whole ranking)."""
    from vision.pipeline import Pipeline

    post = dataclasses.replace(config.postprocess, score_threshold=EVAL_SCORE_THRESHOLD)
    return Pipeline(dataclasses.replace(config, postprocess=post))


def _decode(path: Path):
    from vision.io import decode_image

    return decode_image(path.read_bytes())


def predict_all(
    model: OnnxModel, config: ModelConfig, samples: list[Sample], batch: int = 8
) -> tuple[list[Boxes], float]:
    """Detections per sample in original-image coordinates, and mean latency per image (ms)."""
    pipeline = _pipeline(config)
    input_name = model.inputs[0].name
    preds: list[Boxes] = []
    start = time.perf_counter()
    for i in range(0, len(samples), batch):
        items = [pipeline.preprocess(_decode(s.image)) for s in samples[i : i + batch]]
        stacked = np.stack([np.asarray(t, np.float32) for t, _ in items])
        outputs = model.run({input_name: stacked})
        for k, (_, meta) in enumerate(items):
            result = pipeline.postprocess({n: v[k] for n, v in outputs.items()}, meta)
            dets = result.detections
            preds.append(
                Boxes(
                    np.array([[d.x1, d.y1, d.x2, d.y2] for d in dets], np.float32).reshape(-1, 4),
                    np.array([d.class_id for d in dets], np.int64),
                    np.array([d.score for d in dets], np.float32),
                )
            )
    latency = (time.perf_counter() - start) * 1000 / max(len(samples), 1)
    return preds, latency


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


def _dataset(args: argparse.Namespace, name: str) -> tuple[str, Path]:
    from vision.detect.recipes import RECIPES

    if args.format and args.data:
        return args.format, args.data
    if name in RECIPES:
        return RECIPES[name].format, Path(args.data) if args.data else RECIPES[name].data_path()
    raise SystemExit(f"model {name!r} has no recipe: give --format and --data")


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


def run_eval(args: argparse.Namespace) -> int:
    """`vision eval --model NAME`: evaluate through ONNX; write report.json and plots."""
    repo = args.repo or default_repository()
    model_dir = repo / args.model
    config = load_config(model_dir)
    version = args.version or latest_version(model_dir)
    fmt, data = _dataset(args, args.model)
    if not Path(data).exists():
        raise SystemExit(f"{data}: dataset not found (shared datasets root: {datasets_root()})")
    samples, labels = load_dataset(fmt, Path(data), args.split)
    samples = samples[: args.limit] if args.limit else samples
    assert_no_synthetic([s.image for s in samples], args.split)
    model = OnnxModel(model_dir / str(version) / config.model_file, config.runtime)
    preds, latency = predict_all(model, config, samples, max(1, config.batching.max_batch_size))
    truths = [Boxes.truth(s.boxes, s.labels) for s in samples]
    metrics = compute_metrics(
        preds, truths, config.labels, config.postprocess.score_threshold, deeppcb=fmt == "deeppcb"
    )
    metrics["latency_ms_per_image_cpu"] = round(latency, 2)
    out = args.out or Path("reports") / args.model
    out.mkdir(parents=True, exist_ok=True)
    match = 0.33 if fmt == "deeppcb" else 0.5
    plot_pr_curves(preds, truths, config.labels, match, out / "pr_curve.png")
    plot_confusion(
        preds,
        truths,
        config.labels,
        config.postprocess.score_threshold,
        out / "confusion_matrix.png",
    )
    report = {
        "model": args.model,
        "version": version,
        "split": args.split,
        "format": fmt,
        "images": len(samples),
        "providers": model.providers,
        **metrics,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_card:
        _update_card(model_dir, version, args.split, metrics, len(samples))
    print(json.dumps({k: v for k, v in report.items() if k != "voc_ap50_per_class"}, indent=1))
    return 0
