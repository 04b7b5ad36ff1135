"""Detection figures with their n and a 95 % bootstrap interval over images (numpy only).

Each detection is matched once per IoU threshold, per image (greedy by score, the rule of
`vision.detect.metrics`: `difficult` truths are neither found nor missed); a bootstrap draw
weights every image by how often it was drawn, so AP, mAP and the F-score of a draw are
weighted cumulative sums over the detections sorted once. AP is the VOC all-point
interpolated AP (`metrics.average_precision`); with every weight 1 it equals
`metrics.ap_per_class`. pycocotools' 101-point AP differs from it by a few thousandths.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from vision.detect.metrics import Boxes, _best_match, iou_matrix
from vision.stats import BOOTSTRAP_DRAWS

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
CHUNK = 100  # draws per vectorised block (memory: CHUNK x detections of one class)

DEFINITIONS = {
    "mAP50": "VOC all-point AP at IoU >= 0.5, mean over the classes present in the split "
    "(pycocotools' 101-point mAP, for comparison with other detectors: evaluation.pycocotools)",
    "mAP50_95": "the same AP averaged over IoU 0.50:0.05:0.95, mean over present classes",
    "AP50_<class>": "VOC all-point AP of one class at IoU >= 0.5; `instances`: its true boxes",
    "F1_at_threshold": "F-score (precision, recall pooled over classes) of the boxes scoring "
    "at least the served score_threshold, IoU >= 0.5",
    "defect_free_fp_image_rate": "share of defect-free images that the inspection rules "
    "reject at the served threshold (Wilson 95 % interval)",
    "image_auroc": "ROC AUC of the inspection rules' image score, defective vs defect-free images",
    "ci95": "95 % percentile bootstrap interval over images (2,000 draws, seed 0) unless said",
    "n": "images the figure is computed on",
}


@dataclass
class ClassMatches:
    """One class's detections, sorted by descending score: their image, score and whether
    each is a true positive at every IoU threshold ([T, D]); true boxes per image."""

    image: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    instances: np.ndarray


def match_class(preds: list[Boxes], truths: list[Boxes], cls: int) -> ClassMatches:
    """The matches of class `cls` at every threshold of `IOU_THRESHOLDS`."""
    image, scores, flags = [], [], []
    instances = np.zeros(len(truths), np.int64)
    for i, (pred, truth) in enumerate(zip(preds, truths, strict=True)):
        of_class = truth.labels == cls
        gt, ignored = truth.boxes[of_class], truth.ignore[of_class]
        instances[i] = int((~ignored).sum())
        keep = pred.labels == cls
        order = np.argsort(-pred.scores[keep], kind="stable")
        boxes, conf = pred.boxes[keep][order], pred.scores[keep][order]
        ious = iou_matrix(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), 0))
        per_thr = [_greedy(ious, ignored, thr) for thr in IOU_THRESHOLDS]
        for k in range(len(boxes)):
            image.append(i)
            scores.append(conf[k])
            flags.append([row[k] for row in per_thr])
    tp = np.asarray(flags, np.int8).reshape(-1, len(IOU_THRESHOLDS)).T
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return ClassMatches(
        np.asarray(image, np.int64)[order], np.asarray(scores)[order], tp[:, order], instances
    )


def _greedy(ious: np.ndarray, ignored: np.ndarray, thr: float) -> list[int]:
    """Per detection (score order): 1 true positive, 0 false positive, -1 left out (it
    matches only a difficult truth)."""
    used, out = ignored.copy(), []
    for row in ious:
        hit, j = _best_match(row, used, thr, False)
        if hit:
            used[j] = True
            out.append(1)
        else:
            out.append(-1 if _best_match(row, ~ignored, thr, False)[0] else 0)
    return out


def weighted_ap(matches: ClassMatches, weights: np.ndarray, t: int = 0) -> np.ndarray:
    """All-point AP at threshold index `t` for each row of image `weights` [B, images]; NaN
    where a row weights no true box of the class."""
    counted = matches.tp[t] >= 0
    tp = (matches.tp[t] == 1)[counted]
    w = weights[:, matches.image[counted]]
    npos = weights @ matches.instances
    tp_w = np.cumsum(w * tp, axis=1)
    fp_w = np.cumsum(w * ~tp, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp_w / np.maximum(tp_w + fp_w, 1e-12)
        envelope = np.flip(np.maximum.accumulate(np.flip(precision, 1), axis=1), 1)
        ap = (w * tp * envelope).sum(1) / npos
    return np.where(npos > 0, ap, np.nan)


def weighted_counts(
    matches: ClassMatches, weights: np.ndarray, score_thr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, predictions, true boxes) at IoU 0.5 of the boxes scoring at least
    `score_thr`, for each row of `weights`."""
    keep = (matches.scores >= score_thr) & (matches.tp[0] >= 0)
    w = weights[:, matches.image[keep]]
    return (w * (matches.tp[0][keep] == 1)).sum(1), w.sum(1), weights @ matches.instances


def _draws(n_images: int, seed: int = 0) -> np.ndarray:
    """[1 + BOOTSTRAP_DRAWS, images] image weights: row 0 all ones (the point estimate)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_images, (BOOTSTRAP_DRAWS, n_images))
    counts = np.stack([np.bincount(row, minlength=n_images) for row in picks])
    return np.vstack([np.ones(n_images), counts]).astype(np.float64)


def _figure(samples: np.ndarray, n: int, **extra: int) -> dict:
    """{value (row 0), n, ci95 (percentiles of the other rows)}."""
    rest = samples[1:][np.isfinite(samples[1:])]
    low, high = np.percentile(rest, [2.5, 97.5]) if len(rest) else (np.nan, np.nan)
    return {"value": float(samples[0]), "n": n, **extra, "ci95": [float(low), float(high)]}


def detection_figures(
    preds: list[Boxes], truths: list[Boxes], labels: tuple[str, ...], score_thr: float
) -> dict[str, dict]:
    """mAP50, mAP50_95, AP50 of each present class (with its instances) and F1 at the served
    threshold, each {value, n, ci95} (`DEFINITIONS`)."""
    weights = _draws(len(truths))
    ap = np.full((len(labels), len(IOU_THRESHOLDS), len(weights)), np.nan)
    tp = n_pred = n_true = np.zeros(len(weights))
    matches = [match_class(preds, truths, c) for c in range(len(labels))]
    for c, m in enumerate(matches):
        if not m.instances.sum():
            continue
        for start in range(0, len(weights), CHUNK):
            block = weights[start : start + CHUNK]
            for t in range(len(IOU_THRESHOLDS)):
                ap[c, t, start : start + CHUNK] = weighted_ap(m, block, t)
        k, p, g = weighted_counts(m, weights, score_thr)
        tp, n_pred, n_true = tp + k, n_pred + p, n_true + g
    n = len(truths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw without a class: NaN
        out = {
            "mAP50": _figure(np.nanmean(ap[:, 0], 0), n),
            "mAP50_95": _figure(np.nanmean(np.nanmean(ap, 1), 0), n),
        }
    for c, name in enumerate(labels):
        if matches[c].instances.sum():
            out[f"AP50_{name}"] = _figure(ap[c, 0], n, instances=int(matches[c].instances.sum()))
    f1 = 2 * tp / np.maximum(n_pred + n_true, 1e-12)
    out["F1_at_threshold"] = _figure(f1, n)
    return out
