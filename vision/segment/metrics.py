"""Segmentation metrics on probability maps (numpy + scikit-learn; no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from vision.config import PostprocessSpec
from vision.postprocess import gate_score, strongest_regions
from vision.stats import mean_ci, paired_ci, rate_ci


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean arrays (1.0 when both are empty)."""
    inter = float(np.count_nonzero(pred & truth))
    total = float(np.count_nonzero(pred) + np.count_nonzero(truth))
    if total == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / (total - inter)


def vessel_metrics(
    probs: list[np.ndarray], masks: list[np.ndarray], fovs: list[np.ndarray]
) -> dict[str, float]:
    """Pixel metrics inside the FOV: F1 (= Dice) at argmax, IoU, accuracy, AUROC; pooled."""
    scores = np.concatenate([p[1][f] for p, f in zip(probs, fovs, strict=True)])
    truth = np.concatenate([m[f] > 0 for m, f in zip(masks, fovs, strict=True)])
    pred = np.concatenate([p.argmax(0)[f] > 0 for p, f in zip(probs, fovs, strict=True)])
    dice, iou = dice_iou(pred, truth)
    per_image = [
        dice_iou(p.argmax(0)[f] > 0, m[f] > 0)[0]
        for p, m, f in zip(probs, masks, fovs, strict=True)
    ]
    return {
        "f1": dice,
        "dice": dice,
        "iou": iou,
        "accuracy": float(np.mean(pred == truth)),
        "auroc": float(roc_auc_score(truth, scores)),
        "dice_per_image_mean": float(np.mean(per_image)),
        "images": len(probs),
    }


def vessel_roc(probs: list[np.ndarray], masks: list[np.ndarray], fovs: list[np.ndarray]) -> tuple:
    """(fpr, tpr) of the pooled FOV pixels, subsampled for plotting."""
    scores = np.concatenate([p[1][f] for p, f in zip(probs, fovs, strict=True)])
    truth = np.concatenate([m[f] > 0 for m, f in zip(masks, fovs, strict=True)])
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=True)
    return fpr, tpr


def image_roc(
    probs: list[np.ndarray], masks: list[np.ndarray], image_scores: list[float] | None = None
) -> tuple:
    """(fpr, tpr) of the image-level defect score (as `defect_metrics` scores it)."""
    scores = image_scores or [defect_score(p) for p in probs]
    fpr, tpr, _ = roc_curve([m.any() for m in masks], scores)
    return fpr, tpr


def defect_score(probs: np.ndarray) -> float:
    """Image-level defect score: the largest per-pixel probability of any defect class."""
    return float((1.0 - probs[0]).max())


def defect_class(probs: np.ndarray) -> int:
    """Image-level class: the defect class with most argmax pixels (0 when none)."""
    counts = np.bincount(probs.argmax(0).ravel(), minlength=probs.shape[0])
    counts[0] = 0
    return int(counts.argmax()) if counts.any() else 0


def regions_kept(probs: np.ndarray, max_regions: int) -> np.ndarray:
    """The argmax label map with each class reduced to its `max_regions` strongest regions (the
    serving postprocess `max_regions`; 0 keeps all)."""
    winner = probs.argmax(0)
    if max_regions <= 0:
        return winner
    out = np.zeros_like(winner)
    for c in range(1, probs.shape[0]):
        out[strongest_regions(winner == c, probs[c], max_regions)] = c
    return out


METRIC_DEFINITIONS = {
    "dice": "defect-vs-background Dice of the served mask, mean over the images with a defect",
    "iou": "defect-vs-background IoU of the served mask, mean over the images with a defect",
    "auroc": "image-level ROC AUC of the model's image score, defect vs defect-free images",
    "mask_fp_image_rate": "share of defect-free images whose served mask is not empty",
    "dominant_class_accuracy": "share of defect images whose most probable defect class is "
    "the class covering most of the true defect pixels",
    "per_class.dice_pooled": "Dice of one class over the pixels of all images pooled",
    "per_class.dice_mean": "Dice of one class, mean over the images that contain it",
    "ci95": "95 % percentile bootstrap interval over images (2,000 draws)",
}


def served_masks(
    probs: list[np.ndarray],
    max_regions: int,
    image_scores: list[float] | None = None,
    image_score_gate: float = 0.0,
    gate_uses_mask_score: bool = False,
) -> list[np.ndarray]:
    """Label maps as the server serves them: the `max_regions` strongest regions per class,
    and nothing where the gate score (`gate_scores`) is below `image_score_gate` (0: no gate)."""
    preds = [regions_kept(p, max_regions) for p in probs]
    if image_scores is None or image_score_gate <= 0:
        return preds
    scores = gate_scores(probs, preds, image_scores, gate_uses_mask_score)
    return [
        p if score >= image_score_gate else np.zeros_like(p)
        for p, score in zip(preds, scores, strict=True)
    ]


def mask_scores(probs: np.ndarray, served: np.ndarray) -> list[float]:
    """Each served class mask's score as the server reports it: its mean probability."""
    return [float(probs[c][served == c].mean()) for c in np.unique(served) if c > 0]


def gate_scores(
    probs: list[np.ndarray], served: list[np.ndarray], image_scores: list[float], uses_mask: bool
) -> list[float]:
    """Per image, what the server compares with the gate (`vision.postprocess.gate_score`)."""
    spec = PostprocessSpec(gate_uses_mask_score=uses_mask)
    return [
        gate_score(score, mask_scores(p, s), spec)
        for p, s, score in zip(probs, served, image_scores, strict=True)
    ]


def _per_class(preds: list[np.ndarray], masks: list[np.ndarray], labels: tuple[str, ...]) -> dict:
    per_class = {}
    for c in range(1, len(labels)):
        pooled_p = np.concatenate([(p == c).ravel() for p in preds])
        pooled_t = np.concatenate([(m == c).ravel() for m in masks])
        if not pooled_t.any():
            continue
        dice, iou = dice_iou(pooled_p, pooled_t)
        per_image = [
            dice_iou(p == c, m == c)[0] for p, m in zip(preds, masks, strict=True) if (m == c).any()
        ]
        per_class[labels[c]] = {
            "dice_pooled": dice,
            "iou_pooled": iou,
            "dice_mean": mean_ci(per_image),
        }
    return per_class


def defect_metrics(
    probs: list[np.ndarray],
    masks: list[np.ndarray],
    labels: tuple[str, ...],
    max_regions: int = 0,
    image_scores: list[float] | None = None,
    image_score_gate: float = 0.0,
    gate_uses_mask_score: bool = False,
) -> dict[str, Any]:
    """Tile metrics on the masks as served (`served_masks`), each named for what it computes
    (`METRIC_DEFINITIONS`) and, where it is a mean or a rate over images, with n and a 95 %
    bootstrap interval (`*_ci`)."""
    preds = served_masks(probs, max_regions, image_scores, image_score_gate, gate_uses_mask_score)
    defect = [i for i, m in enumerate(masks) if m.any()]
    clean = [i for i, m in enumerate(masks) if not m.any()]
    binary = [dice_iou(preds[i] > 0, masks[i] > 0) for i in defect]
    has_defect = np.array([m.any() for m in masks])
    scores = np.array(image_scores or [defect_score(p) for p in probs])
    truth_cls = [int(np.bincount(m.ravel(), minlength=len(labels))[1:].argmax() + 1) for m in masks]
    cls_ok = [defect_class(probs[i]) == truth_cls[i] for i in defect]
    dice_ci = mean_ci([d for d, _ in binary])
    auroc_ci = paired_ci(roc_auc_score, has_defect, scores)
    fp_ci = rate_ci([bool(preds[i].any()) for i in clean])
    return {
        "dice": dice_ci["value"],
        "iou": float(np.mean([j for _, j in binary])) if binary else float("nan"),
        "auroc": auroc_ci["value"],
        "mask_fp_image_rate": fp_ci["value"],
        "dominant_class_accuracy": float(np.mean(cls_ok)) if cls_ok else float("nan"),
        "dice_ci": dice_ci,
        "auroc_ci": auroc_ci,
        "mask_fp_image_rate_ci": fp_ci,
        "image_score_gate": image_score_gate,
        "gate_uses_mask_score": gate_uses_mask_score,
        "per_class": _per_class(preds, masks, labels),
        "images": len(probs),
        "defect_images": len(defect),
        "defect_free_images": len(clean),
        "definitions": METRIC_DEFINITIONS,
    }


def headline(recipe_name: str, metrics: dict) -> float:
    """One number for model selection and parity gates (higher is better)."""
    if recipe_name == "retina-vessels":
        return float(metrics["dice"])
    return 0.5 * (float(metrics["dice"]) + float(metrics["auroc"]))
