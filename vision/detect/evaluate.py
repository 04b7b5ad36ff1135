"""Evaluate a served detector the way the server runs it: `vision.loader` (decode, Pipeline,
ONNX Runtime).

Reports mAP@0.5 and mAP@[.5:.95] (pycocotools), per-class AP, the DeepPCB protocol for DeepPCB
data, a PR-curve PNG, a confusion-matrix PNG and a JSON report; updates the model card.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vision.datasets.detection import Sample, load_dataset, split_holdout
from vision.datasets.provenance import assert_no_synthetic
from vision.detect.intervals import DEFINITIONS, detection_figures
from vision.detect.metrics import (
    Boxes,
    ap_per_class,
    best_f,
    coco_map,
    deeppcb_protocol,
    f_score,
    instances_per_class,
    mean_present,
    per_class_or_absent,
)
from vision.detect.plots import plot_confusion, plot_pr_curves
from vision.errors import ConfigError, DatasetNotFoundError
from vision.inspection import InspectionRules
from vision.loader import LoadedModel, load_model
from vision.operating_point import (
    DEFAULT_TARGET_ESCAPE,
    image_scores,
    operating_point,
    plot_operating_point,
    rules_threshold,
    write_operating_point,
)
from vision.paths import datasets_root, default_repository
from vision.reports import write_json
from vision.types import Detection, DetectionResult

NO_NEGATIVES = (
    "no defect-free image in the split (or in val): false-reject rate, image AUROC and the "
    "threshold for a target escape rate cannot be measured"
)
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


def load_split(
    name: str, fmt: str, data: Path, split: str, labels: tuple[str, ...] | None = None
) -> list[Sample]:
    """The samples of a split, class names mapped to `labels` (the model's); `val` of a recipe
    that holds validation images out of its training split (`val_split` "") is that same
    hold-out (as training made it)."""
    from vision.detect.recipes import RECIPES

    recipe = RECIPES.get(name)
    if split == "val" and recipe is not None and not recipe.val_split:
        train, _ = load_dataset(fmt, data, recipe.train_split, labels)
        return split_holdout(train, recipe.holdout or max(1, len(train) // 10))[1]
    return load_dataset(fmt, data, split, labels)[0]


def negatives_of(samples: list[Sample], fmt: str) -> list[Sample]:
    """Defect-free images for the image-level false-reject rate: DeepPCB's aligned templates
    (`N_temp.jpg`; every DeepPCB test image has defects), else the images without a box."""
    if fmt == "deeppcb":
        return [_template_sample(s) for s in samples]
    return [s for s in samples if not len(s.boxes)]


def _template_sample(sample: Sample) -> Sample:
    template = sample.image.with_name(sample.image.name.replace("_test", "_temp"))
    return Sample(template, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def as_results(preds: list[Boxes], labels: tuple[str, ...]) -> list[DetectionResult]:
    """`Boxes` back as `DetectionResult`s (what the inspection rules judge)."""
    return [
        DetectionResult(
            [
                Detection(*map(float, box), float(score), int(c), labels[int(c)])
                for box, c, score in zip(p.boxes, p.labels, p.scores, strict=True)
            ]
        )
        for p in preds
    ]


def split_scores(
    model: LoadedModel,
    samples: list[Sample],
    fmt: str,
    preds: list[Boxes] | None = None,
) -> tuple[list[float], list[float]]:
    """Image-level defect scores (inspection rules, `vision.inspection.defect_score`) of the
    defective images and of the defect-free ones (`negatives_of`); `preds`: the samples'
    predictions when already made."""
    rules = InspectionRules.from_config(model.config)
    labels = model.config.labels
    preds = preds if preds is not None else predict_all(model, samples)[0]
    scores = image_scores(as_results(preds, labels), rules)
    pos = [sc for sc, s in zip(scores, samples, strict=True) if len(s.boxes)]
    neg = [sc for sc, s in zip(scores, samples, strict=True) if not len(s.boxes)]
    if fmt == "deeppcb":
        neg_preds = predict_all(model, negatives_of(samples, fmt))[0]
        neg = image_scores(as_results(neg_preds, labels), rules)
    return pos, neg


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
    counts = instances_per_class(truths, nc)
    metrics["instances_per_class"] = dict(zip(labels, counts, strict=True))
    metrics["absent_classes"] = [name for name, n in zip(labels, counts, strict=True) if not n]
    ap50 = ap_per_class(preds, truths, nc, 0.5)
    metrics["voc_ap50_per_class"] = per_class_or_absent(labels, ap50)
    metrics["voc_map50"] = mean_present(ap50)
    metrics["at_config_threshold"] = {
        "score_threshold": score_thr,
        **f_score(preds, truths, nc, 0.5, score_thr),
    }
    metrics["best_f_iou50"] = best_f(preds, truths, nc, 0.5, False)
    metrics["figures"] = detection_figures(preds, truths, labels, score_thr)
    if deeppcb:
        proto = deeppcb_protocol(preds, truths, nc, score_thr)
        proto["ap"] = per_class_or_absent(labels, np.asarray(proto["ap"]))
        proto["best_f"] = best_f(preds, truths, nc, 0.33, True)
        metrics["deeppcb"] = proto
    return metrics


def dataset_of(
    name: str, fmt: str | None = None, data: Path | None = None, model_dir: Path | None = None
) -> tuple[str, Path]:
    """The format and folder of a model's evaluation data: given, else its recipe's, else what
    its model card records (`recipe.format`, `recipe.data`); the folder must exist
    (DatasetNotFoundError says where it looked)."""
    from vision.detect.recipes import RECIPES

    recorded = _recorded_dataset(model_dir)
    if fmt and data:
        found = fmt, Path(data)
    elif name in RECIPES:
        found = fmt or RECIPES[name].format, Path(data) if data else RECIPES[name].data_path()
    elif recorded.get("format") and (data or recorded.get("data")):
        found = fmt or recorded["format"], Path(data or recorded["data"])
    else:
        raise ConfigError(
            f"model {name!r} has no recipe and its card records no dataset: give --format "
            "and --data"
        )
    if not found[1].exists():
        raise DatasetNotFoundError(
            f"{found[1]}: dataset not found (shared datasets root: {datasets_root()}; set "
            "VISION_DATASETS or give --data)"
        )
    return found


def recipe_name(name: str, model_dir: Path) -> str:
    """The model whose recipe and data an evaluation uses: an INT8 twin's float model
    (`int8_of` in its card), else `name` itself."""
    if not (model_dir / "card.json").is_file():
        return name
    from vision.export import read_card

    return read_card(model_dir).get("int8_of") or name


def _recorded_dataset(model_dir: Path | None) -> dict:
    """The `recipe` section of a model's card (format, data, splits), {} without one."""
    if model_dir is None or not (model_dir / "card.json").is_file():
        return {}
    from vision.export import read_card

    recipe = read_card(model_dir).get("recipe") or read_card(model_dir).get("training", {})
    return recipe.get("recipe", recipe) if isinstance(recipe, dict) else {}


def headline(report: dict) -> dict[str, dict]:
    """The card's figures of one evaluation, each {value, n, ci95} (`intervals.DEFINITIONS`):
    mAP, per-class AP with its instances, F1 at the served threshold and, where the split has
    defect-free images, their false-positive image rate and the image AUROC."""
    flat = dict(report["figures"])
    point = report.get("operating_point", {})
    at = point.get("at_config_threshold", {}).get(report["split"], {})
    if at.get("false_reject", {}).get("n"):
        fr = at["false_reject"]
        flat["defect_free_fp_image_rate"] = {
            "value": fr["rate"],
            "n": fr["n"],
            "k": fr["k"],
            "ci95": fr["ci95"],
            "threshold": at["threshold"],
        }
    auroc = point.get("image_auroc", {}).get("value")
    if auroc is not None and np.isfinite(auroc):
        flat["image_auroc"] = point["image_auroc"]
    return flat


def _definitions(figures: dict) -> dict[str, str]:
    """`intervals.DEFINITIONS`, and which image-level figures do not apply and why."""
    missing = [k for k in ("defect_free_fp_image_rate", "image_auroc") if k not in figures]
    if not missing:
        return dict(DEFINITIONS)
    why = "the split has no defect-free image (every image holds a labelled box)"
    return {**DEFINITIONS, "not applicable": f"{' and '.join(missing)}: {why}"}


def _update_card(model_dir: Path, report: dict) -> None:
    from vision.export import read_card, write_card
    from vision.model_card import note_evaluation

    card = read_card(model_dir)
    split, n = report["split"], report["images"]
    figures = headline(report)
    card["metrics"] = {**card.get("metrics", {}), split: figures}
    kept = {k: v for k, v in card.get("evaluation", {}).items() if k in ("runs", "xai")}
    skip = ("model", "providers", "figures", "latency_ms_per_image_cpu")  # latency: bench/
    card["evaluation"] = {
        **{k: v for k, v in report.items() if k not in skip},
        "pycocotools": {k: report[k] for k in ("map50", "map50_95", "ap50_per_class")},
        "definitions": _definitions(figures),
        **kept,
    }
    write_card(model_dir, note_evaluation(card, split, n, model_dir, report["version"]))


def evaluate_detector(
    name: str,
    repo: Path | None = None,
    version: int | str | None = None,
    split: str = "test",
    data: Path | None = None,
    fmt: str | None = None,
    limit: int = 0,
    out: Path | None = None,
    update_card: bool = False,
    target_escape: float | None = DEFAULT_TARGET_ESCAPE,
    write_point: bool = False,
) -> dict:
    """`vision eval --model NAME` for a detector: through `vision.loader`; writes report.json,
    the PR curves, the confusion matrix and the operating-point plot into `out` (default
    reports/NAME); returns the report. `target_escape` None skips the operating point;
    `write_point` records its selected threshold in the model's config and card."""
    model_dir = Path(repo or default_repository()) / name
    model = load_model(model_dir, version, explain=False)
    config = model.config
    base = recipe_name(name, model_dir)
    fmt, data = dataset_of(base, fmt, data, model_dir.parent / base)
    samples = load_split(base, fmt, data, split, config.labels)
    samples = samples[:limit] if limit else samples
    assert_no_synthetic([s.image for s in samples], split)
    preds, latency = predict_all(model, samples)
    truths = [Boxes.truth(s.boxes, s.labels, s.difficult) for s in samples]
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
    if target_escape is not None:
        where = (data, split, limit, out)
        report["operating_point"] = detector_operating_point(
            model, base, fmt, where, samples, preds, target_escape
        )
    write_json(report, out / "report.json")
    if update_card:
        _update_card(model_dir, report)
    if write_point and "operating_point" in report:
        write_operating_point(model_dir, report["operating_point"])
    return report


def image_auroc(positives: list[float], negatives: list[float]) -> dict:
    """ROC AUC of image scores, defective (`positives`) vs defect-free, with n and its 95 %
    bootstrap interval over images (NaN without both kinds)."""
    from sklearn.metrics import roc_auc_score

    from vision.stats import paired_ci

    truth = np.array([True] * len(positives) + [False] * len(negatives))
    return paired_ci(roc_auc_score, truth, np.array([*positives, *negatives], np.float64))


def detector_operating_point(
    model: LoadedModel,
    name: str,
    fmt: str,
    where: tuple[Path, str, int, Path],
    samples: list[Sample],
    preds: list[Boxes],
    target_escape: float,
) -> dict:
    """The `operating_point` report section: the threshold for `target_escape` chosen on the
    validation split, the evaluated split scored at it and at the config's; PNG in the report
    folder. `where`: (data folder, evaluated split, limit, report folder). Without a val
    split the section says so (`skipped`) and has no threshold."""
    data, split, limit, out = where
    scored = split_scores(model, samples, fmt, preds)
    if split == "val":
        val, test = scored, None
    else:
        try:
            val_samples = load_split(name, fmt, data, "val", model.config.labels)
        except (FileNotFoundError, DatasetNotFoundError) as e:
            return {"skipped": f"no val split to choose the threshold on ({e})"}
        val = split_scores(model, val_samples[:limit] if limit else val_samples, fmt)
        test = scored
    if not val[1] or (test is not None and not test[1]):
        return {"skipped": NO_NEGATIVES}
    rules = InspectionRules.from_config(model.config)
    section = operating_point(val, test, rules_threshold(rules), target_escape)
    section["test_split"] = None if test is None else split
    section["image_auroc"] = image_auroc(*scored)
    section["negatives"] = (
        "DeepPCB templates (N_temp.jpg): aligned defect-free images of the same boards"
        if fmt == "deeppcb"
        else "images without a labelled box"
    )
    splits = {"val": val} | ({split: test} if test is not None else {})
    marks = {"config": section["config_threshold"], "selected": section["selected_threshold"]}
    title = f"{model.name}: target escape {target_escape:g} (selected on val)"
    section["plot"] = plot_operating_point(splits, marks, out / "operating_point.png", title).name
    return section
