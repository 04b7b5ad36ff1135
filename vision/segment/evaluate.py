"""Evaluation through the serving path (`vision.loader`: Pipeline + session) and the export gate."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision.config import ModelConfig, RuntimeSpec
from vision.datasets import segmentation
from vision.datasets.provenance import assert_no_synthetic
from vision.errors import DatasetNotFoundError
from vision.export import read_card, write_card
from vision.inspection import InspectionRules
from vision.io import decode_image
from vision.loader import LoadedModel, load_model, open_model
from vision.operating_point import (
    DEFAULT_TARGET_ESCAPE,
    image_scores,
    operating_point,
    plot_operating_point,
    rules_threshold,
    write_operating_point,
)
from vision.postprocess import image_score
from vision.reports import plot_roc, save_overlay, write_json
from vision.segment.metrics import defect_metrics, image_roc, vessel_metrics, vessel_roc
from vision.segment.model import Recipe
from vision.types import Image

log = logging.getLogger(__name__)
GATE_KEYS = ("dice", "auroc")
PIXEL_METRIC_DATASETS = ("drive", "folder")  # pixel Dice/AUROC (in the FOV); tiles: per image


def make_pipeline(config: ModelConfig) -> Any:
    """The serving pipeline for a config (the same code path as the server)."""
    from vision.pipeline import Pipeline

    return Pipeline(config)


def load_samples(recipe: Recipe, root: Path, split: str, split_file: Path, limit: int = 0) -> list:
    """Samples of one split: DRIVE train/val/test (val carved from training), tile from JSON."""
    if recipe.dataset == "drive":
        val = list(recipe.extra["val_images"])
        if split == "test":
            samples = segmentation.load_drive(root, "test")
        else:
            samples = [
                s
                for s in segmentation.load_drive(root, "training")
                if (s.name in val) == (split == "val")
            ]
    elif recipe.dataset == "folder":
        samples = _folder_samples(recipe, split, split_file)
    else:
        splits = segmentation.tile_split(root, split_file, seed=recipe.extra.get("split_seed", 0))
        samples = segmentation.load_tile(root, splits[split], binary=len(recipe.labels) == 2)
    if limit:
        samples = spread(samples, limit)
    assert_no_synthetic([s.path for s in samples if s.path], split)
    return samples


def _folder_samples(recipe: Recipe, split: str, split_file: Path) -> list:
    """A user's folder: train/val from the recorded split, test from --test-images (or none)."""
    extra = recipe.extra
    if split == "test":
        if not extra.get("test_images"):
            return []
        return segmentation.load_folder(Path(extra["test_images"]), Path(extra["test_masks"]))
    by_name = {
        s.name: s for s in segmentation.load_folder(Path(extra["images"]), Path(extra["masks"]))
    }
    return [by_name[n] for n in segmentation.folder_split(sorted(by_name), split_file)[split]]


def spread(samples: list, limit: int) -> list:
    """At most `limit` samples, spread over the list (keeps tile categories mixed)."""
    idx = np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(int)
    return [samples[i] for i in sorted(set(idx))]


def _decoded(sample: segmentation.Sample) -> Image:
    """The image as the server sees it: its file decoded by vision.io (raw pixels otherwise)."""
    if sample.path:
        return decode_image(Path(sample.path).read_bytes())
    return Image(pixels=sample.image)


def model_inputs(pipeline: Any, samples: list) -> tuple[list[np.ndarray], list]:
    """Preprocessed float32 inputs of `samples` under `pipeline`, and their metadata."""
    pairs = [pipeline.preprocess(_decoded(s)) for s in samples]
    return [np.asarray(t, np.float32) for t, _ in pairs], [m for _, m in pairs]


def _batched(tensors: list[np.ndarray], size: int) -> list[np.ndarray]:
    return [np.stack(tensors[i : i + size]) for i in range(0, len(tensors), size)]


@dataclass
class Predictions:
    """Per-image (C,H,W) probabilities at original size, and the model's image-level scores when
    its config names an `image_score_output` (else None)."""

    probs: list[np.ndarray]
    image_scores: list[float] | None = None
    results: list | None = None  # SegmentationResults as served, when asked for


def _predictions(pipeline: Any, outputs: list[dict], metas: list) -> Predictions:
    probs = [pipeline.segmentation_probabilities(o, m) for o, m in zip(outputs, metas, strict=True)]
    name = pipeline.config.postprocess.image_score_output
    scores = [image_score(o, name) for o in outputs] if name else None
    return Predictions(probs, scores)


def predict(
    model: LoadedModel, samples: list, batch: int = 8, results: bool = False
) -> Predictions:
    """Predictions of a loaded model through its Pipeline and session (the serving path);
    `results`: also the served `SegmentationResult`s (what the inspection rules judge)."""
    tensors, metas = model_inputs(model.pipeline, samples)
    outputs = model.run_items(tensors, batch)
    predictions = _predictions(model.pipeline, outputs, metas)
    if results:
        post = model.pipeline.postprocess
        predictions.results = [post(o, m) for o, m in zip(outputs, metas, strict=True)]
    return predictions


def split_scores(samples: list, results: list, rules: InspectionRules) -> tuple[list, list]:
    """Image-level defect scores (`vision.inspection.defect_score`) of the images whose truth
    mask has a defect pixel, and of the defect-free ones."""
    scores = image_scores(results, rules)
    pos = [sc for sc, s in zip(scores, samples, strict=True) if s.mask.any()]
    neg = [sc for sc, s in zip(scores, samples, strict=True) if not s.mask.any()]
    return pos, neg


def segmenter_operating_point(
    model: LoadedModel,
    val: tuple[list, list],
    test: tuple[list, list] | None,
    target_escape: float,
    out: Path,
) -> dict:
    """The `operating_point` report section (threshold chosen on `val`, `test` scored once at
    it and at the config's); the PNG in `out`."""
    rules = InspectionRules.from_config(model.config)
    section = operating_point(val, test, rules_threshold(rules), target_escape)
    section["negatives"] = "images whose truth mask has no defect pixel"
    splits = {"val": val} | ({"test": test} if test is not None else {})
    marks = {"config": section["config_threshold"], "selected": section["selected_threshold"]}
    title = f"{model.name}: target escape {target_escape:g} (selected on val)"
    section["plot"] = plot_operating_point(splits, marks, out / "operating_point.png", title).name
    return section


def onnx_predict(
    onnx_path: Path, config: ModelConfig, samples: list, batch: int = 8
) -> Predictions:
    """`predict` with an ONNX file opened by `vision.loader.open_model` (config's runtime)."""
    return predict(open_model(config, onnx_path), samples, batch)


def torch_predict(model: Any, config: ModelConfig, samples: list, batch: int = 4) -> Predictions:
    """The same as `onnx_predict`, with the torch model in place of ONNX Runtime (its outputs in
    the order: logits, then the image score when the config has one)."""
    import torch

    pipeline = make_pipeline(config)
    tensors, metas = model_inputs(pipeline, samples)
    post = config.postprocess
    names = [post.output or "logits", post.image_score_output]
    outputs = []
    model.eval()
    with torch.no_grad():
        for chunk in _batched(tensors, batch):
            result = model(torch.from_numpy(chunk))
            result = result if isinstance(result, (tuple, list)) else (result,)
            arrays = dict(zip(names, (r.numpy() for r in result), strict=False))
            outputs += [{k: v[i] for k, v in arrays.items()} for i in range(len(chunk))]
    return _predictions(pipeline, outputs, metas)


def compute_metrics(
    recipe: Recipe,
    predictions: Predictions,
    samples: list,
    max_regions: int | None = None,
    image_score_gate: float = 0.0,
    gate_uses_mask_score: bool = False,
) -> dict:
    """Recipe metrics at original image size, masks as served (`max_regions`: the config's
    postprocess setting, default the recipe's; `image_score_gate` and `gate_uses_mask_score`:
    the config's, no mask below that gate score)."""
    probs, masks = predictions.probs, [s.mask for s in samples]
    if recipe.dataset in PIXEL_METRIC_DATASETS:
        fovs = [
            np.ones(m.shape, bool) if s.fov is None else s.fov
            for s, m in zip(samples, masks, strict=True)
        ]
        return vessel_metrics(probs, masks, fovs)
    if max_regions is None:
        max_regions = int(recipe.extra.get("max_regions", 0))
    return defect_metrics(
        probs,
        masks,
        recipe.labels,
        max_regions,
        predictions.image_scores,
        image_score_gate,
        gate_uses_mask_score,
    )


def gate(reference: dict, candidate: dict, tolerance_points: float) -> dict:
    """Per-key absolute differences (in points) and whether all are within tolerance."""
    diffs = {k: 100 * abs(float(reference[k]) - float(candidate[k])) for k in GATE_KEYS}
    return {
        "diff_points": diffs,
        "tolerance_points": tolerance_points,
        "passed": all(d <= tolerance_points for d in diffs.values()),
    }


def time_model(
    config: ModelConfig, onnx_path: Path, example: np.ndarray, repeats: int = 10
) -> float:
    """Median single-thread latency (ms) of one batch through ONNX Runtime on CPU."""
    model = open_model(config, onnx_path, RuntimeSpec(providers=("cpu",), intra_op_threads=1))
    model.run(example)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(example)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def write_plots(
    recipe: Recipe, predictions: Predictions, samples: list, metrics: dict, out: Path
) -> list[str]:
    """ROC curve (retina: pixels in the FOV; tiles: images) and up to four overlays
    (image | truth | prediction)."""
    files, probs, masks = [], predictions.probs, [s.mask for s in samples]
    if recipe.dataset == "drive":
        fpr, tpr = vessel_roc(probs, masks, [s.fov for s in samples])
        files.append(plot_roc(fpr, tpr, metrics["auroc"], out / "roc.png", recipe.name).name)
    elif recipe.dataset == "magnetic-tile" and not np.isnan(metrics["auroc"]):
        fpr, tpr = image_roc(probs, masks, predictions.image_scores)
        title = f"{recipe.name}: image-level defect ROC"
        files.append(plot_roc(fpr, tpr, metrics["auroc"], out / "roc.png", title).name)
    picks = [i for i, s in enumerate(samples) if s.mask.any()][:3]
    picks += [i for i, s in enumerate(samples) if not s.mask.any()][:1]
    for i in picks:
        s = samples[i]
        name = f"overlay_{Path(s.name).stem}.png"
        save_overlay(s.image, s.mask, probs[i].argmax(0), out / name, f"{s.category} {s.name}")
        files.append(name)
    return files


def pixel_figures(predictions: Predictions, samples: list) -> dict:
    """The FOV pixel figures with n and 95 % intervals (`vessel_intervals.vessel_figures`)."""
    from vision.segment.vessel_intervals import vessel_figures

    masks = [s.mask for s in samples]
    fovs = [
        np.ones(m.shape, bool) if s.fov is None else s.fov
        for s, m in zip(samples, masks, strict=True)
    ]
    return vessel_figures(predictions.probs, masks, fovs)


def _update_card(model_dir: Path, report: dict) -> None:
    """Record an evaluation in the card: its figures (with n and intervals) under
    `metrics.<split>`, the whole report's metrics under `evaluation.<split>`, the run."""
    from vision.model_card import note_evaluation

    card = read_card(model_dir)
    split, metrics = report["split"], report["metrics"]
    figures = metrics.get("figures")
    card.setdefault("metrics", {})[split] = (
        {**figures, "images": report["images"]} if figures else metrics
    )
    card.setdefault("evaluation", {})[split] = {
        "images": report["images"],
        "version": report["version"],
        "pipeline": report["pipeline"],
        "metrics": {k: v for k, v in metrics.items() if k != "figures"},
        **({"operating_point": report["operating_point"]} if "operating_point" in report else {}),
    }
    version = report["version"]
    write_card(model_dir, note_evaluation(card, split, report["images"], model_dir, version))


def evaluate_model(
    recipe: Recipe,
    repo: Path,
    root: Path,
    split: str,
    out: Path,
    version: int = 0,
    limit: int = 0,
    update_card: bool = False,
    name: str = "",
    target_escape: float | None = DEFAULT_TARGET_ESCAPE,
    write_point: bool = False,
    folder: tuple[Path, Path] | None = None,
) -> dict:
    """Evaluate a repository model through ONNX on a split; JSON + PNGs; update the card.

    `target_escape` (None: skipped): the image-level operating point, its threshold chosen on
    the val split (`operating_point` in the report); `write_point` records it in the config.
    `folder` (images, masks): evaluate on any such pair of folders instead (split "folder";
    never recorded in the card)."""
    model_dir = Path(repo) / (name or recipe.name)
    model = load_model(model_dir, version, explain=False)
    config, onnx_path = model.config, model.session.path
    if folder is not None:
        samples = segmentation.load_folder(Path(folder[0]), Path(folder[1]))
        samples, split, update_card = spread(samples, limit) if limit else samples, "folder", False
    else:
        samples = load_samples(recipe, root, split, model_dir / "splits.json", limit)
    if not samples:
        raise DatasetNotFoundError(
            f"no {split} images for {name or recipe.name} (train with --test-images)"
        )
    start = time.perf_counter()
    predictions = predict(model, samples, results=target_escape is not None)
    seconds = time.perf_counter() - start
    post = config.postprocess
    gate = post.image_score_gate if post.image_score_output else 0.0
    metrics = compute_metrics(
        recipe, predictions, samples, post.max_regions, gate, post.gate_uses_mask_score
    )
    if recipe.dataset in PIXEL_METRIC_DATASETS:
        metrics["figures"] = pixel_figures(predictions, samples)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": config.name,
        "onnx": str(onnx_path),
        "split": split,
        "images": len(samples),
        "limit": limit,
        "version": int(model.version),
        "pipeline": type(model.pipeline).__module__,
        "seconds": round(seconds, 2),
        "metrics": metrics,
    }
    report["plots"] = write_plots(recipe, predictions, samples, metrics, out)
    if target_escape is not None:
        rules = InspectionRules.from_config(config)
        scored = split_scores(samples, predictions.results or [], rules)
        if split == "val":
            val, test = scored, None
        else:
            val_samples = load_samples(recipe, root, "val", model_dir / "splits.json", limit)
            val_results = predict(model, val_samples, results=True).results or []
            val, test = split_scores(val_samples, val_results, rules), scored
        section = segmenter_operating_point(model, val, test, target_escape, out)
        report["operating_point"] = section | {"test_split": None if test is None else split}
    write_json(report, out / "report.json")
    if update_card and not limit:
        _update_card(model_dir, report)
    if write_point and "operating_point" in report:
        write_operating_point(model_dir, report["operating_point"])
    return report
