"""Pixel-level figures of a segmenter scored inside a field of view (retina vessels), each
with its n (images) and a 95 % percentile bootstrap interval over images (2,000 draws).

Pooled figures (Dice, IoU, accuracy, AUROC over all FOV pixels of the split) are resampled
by image: a draw sums the per-image pixel counts of the images it picked. The pooled AUROC's
value is exact (scikit-learn on every pixel); its interval comes from per-image score
histograms (1,000 bins on [0, 1]), whose AUROC differs from the exact one by < 0.001.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from vision.stats import BOOTSTRAP_DRAWS, mean_ci

BINS = 1000
DEFINITIONS = {
    "dice_pooled": "Dice of the vessel class over the FOV pixels of all images pooled "
    "(argmax mask as served)",
    "dice_mean": "Dice of the vessel class per image, mean over images",
    "iou_pooled": "IoU of the vessel class over the pooled FOV pixels",
    "accuracy_pooled": "share of FOV pixels whose served class is the true one",
    "auroc_pooled": "ROC AUC of the vessel probability over the pooled FOV pixels",
    "ci95": "95 % percentile bootstrap interval over images (2,000 draws, seed 0); "
    "auroc_pooled's from 1,000-bin score histograms",
    "not applicable": "image AUROC and the defect-free false-positive rate: every image "
    "has vessels and the model has no image score",
}


def _counts(prob: np.ndarray, mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """[intersection, predicted, true, correct, pixels] of one image inside its FOV."""
    pred, truth = prob.argmax(0)[fov] > 0, mask[fov] > 0
    inter = np.count_nonzero(pred & truth)
    return np.array(
        [inter, pred.sum(), truth.sum(), np.count_nonzero(pred == truth), pred.size], np.float64
    )


def _histograms(prob: np.ndarray, mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """[2, BINS] vessel-probability histogram of the background and the vessel pixels."""
    score, truth = prob[1][fov], mask[fov] > 0
    edges = np.linspace(0, 1, BINS + 1)
    return np.stack([np.histogram(score[t], edges)[0] for t in (~truth, truth)]).astype(float)


def binned_auroc(hist: np.ndarray) -> np.ndarray:
    """AUROC from [..., 2, BINS] histograms (ties count one half)."""
    neg, pos = hist[..., 0, :], hist[..., 1, :]
    below = np.cumsum(neg, -1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(-1)
    return wins / np.maximum(pos.sum(-1) * neg.sum(-1), 1e-12)


def _figure(values: np.ndarray, point: float, n: int) -> dict:
    low, high = np.percentile(values, [2.5, 97.5])
    return {"value": float(point), "n": n, "ci95": [float(low), float(high)]}


def vessel_figures(
    probs: list[np.ndarray], masks: list[np.ndarray], fovs: list[np.ndarray], seed: int = 0
) -> dict:
    """dice_pooled, dice_mean, iou_pooled, accuracy_pooled, auroc_pooled ({value, n, ci95})."""
    counts = np.stack([_counts(p, m, f) for p, m, f in zip(probs, masks, fovs, strict=True)])
    hists = np.stack([_histograms(p, m, f) for p, m, f in zip(probs, masks, fovs, strict=True)])
    n = len(probs)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, (BOOTSTRAP_DRAWS, n))
    weights = np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.float64)
    inter, pred, true, correct, pixels = (weights @ counts).T
    total = counts.sum(0)
    scores = np.concatenate([p[1][f] for p, f in zip(probs, fovs, strict=True)])
    truth = np.concatenate([m[f] > 0 for m, f in zip(masks, fovs, strict=True)])
    per_image = [2 * c[0] / max(c[1] + c[2], 1) for c in counts]
    return {
        "dice_pooled": _figure(2 * inter / (pred + true), 2 * total[0] / (total[1] + total[2]), n),
        "dice_mean": mean_ci(per_image, seed),
        "iou_pooled": _figure(
            inter / (pred + true - inter), total[0] / (total[1] + total[2] - total[0]), n
        ),
        "accuracy_pooled": _figure(correct / pixels, total[3] / total[4], n),
        "auroc_pooled": _figure(
            binned_auroc(np.einsum("bi,ijk->bjk", weights, hists)),
            roc_auc_score(truth, scores),
            n,
        ),
        "definitions": DEFINITIONS,
    }
