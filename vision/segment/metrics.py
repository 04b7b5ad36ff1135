"""Segmentation metrics on probability maps (numpy + scikit-learn; no torch)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from vision.postprocess import strongest_regions


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


def defect_metrics(
    probs: list[np.ndarray],
    masks: list[np.ndarray],
    labels: tuple[str, ...],
    max_regions: int = 0,
    image_scores: list[float] | None = None,
) -> dict[str, float | dict]:
    """Tile metrics: defect-vs-background Dice/IoU per defect image (mean), per-class Dice/IoU
    (pooled over images), image-level defect AUROC (of `image_scores`, the model's own image
    score, else the largest defect probability), class accuracy; masks as served
    (`max_regions` strongest regions per class)."""
    preds = [regions_kept(p, max_regions) for p in probs]
    defect = [i for i, m in enumerate(masks) if m.any()]
    binary = [dice_iou(preds[i] > 0, masks[i] > 0) for i in defect]
    per_class = {}
    for c in range(1, len(labels)):
        pooled_p = np.concatenate([(p == c).ravel() for p in preds])
        pooled_t = np.concatenate([(m == c).ravel() for m in masks])
        if pooled_t.any():
            dice, iou = dice_iou(pooled_p, pooled_t)
            per_class[labels[c]] = {"dice": dice, "iou": iou}
    has_defect = np.array([m.any() for m in masks])
    scores = np.array(image_scores or [defect_score(p) for p in probs])
    truth_cls = [int(np.bincount(m.ravel(), minlength=len(labels))[1:].argmax() + 1) for m in masks]
    cls_ok = [defect_class(probs[i]) == truth_cls[i] for i in defect]
    both = has_defect.any() and (~has_defect).any()
    return {
        "dice": float(np.mean([d for d, _ in binary])) if binary else float("nan"),
        "iou": float(np.mean([j for _, j in binary])) if binary else float("nan"),
        "auroc": float(roc_auc_score(has_defect, scores)) if both else float("nan"),
        "class_accuracy": float(np.mean(cls_ok)) if cls_ok else float("nan"),
        "mean_class_dice": float(np.mean([v["dice"] for v in per_class.values()]))
        if per_class
        else float("nan"),
        "per_class": per_class,
        "images": len(probs),
        "defect_images": len(defect),
    }


def headline(recipe_name: str, metrics: dict) -> float:
    """One number for model selection and parity gates (higher is better)."""
    if recipe_name == "retina-vessels":
        return float(metrics["dice"])
    return 0.5 * (float(metrics["dice"]) + float(metrics["auroc"]))
