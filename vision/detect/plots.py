"""Evaluation plots: per-class precision-recall curves and a detection confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vision.detect.metrics import Boxes, average_precision, iou_matrix, pr_curve  # noqa: E402


def plot_pr_curves(
    preds: list[Boxes], truths: list[Boxes], labels: tuple[str, ...], iou: float, path: Path
) -> Path:
    """One precision-recall curve per class at IoU `iou` (strictly above it when < 0.5)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(labels):
        precision, recall, _ = pr_curve(preds, truths, c, iou, strict=iou < 0.5)
        if not any(np.any(t.labels == c) for t in truths):
            ax.plot([], [], label=f"{name} absent")
            continue
        ap = average_precision(precision, recall)
        ax.plot(recall, precision, label=f"{name} AP={ap:.3f}")
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"precision-recall (IoU {'>' if iou < 0.5 else '>='} {iou})",
    )
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def confusion(
    preds: list[Boxes], truths: list[Boxes], nc: int, score_thr: float, iou: float = 0.5
) -> np.ndarray:
    """[nc + 1, nc + 1] counts: rows true class (+ background), columns predicted (+ missed)."""
    matrix = np.zeros((nc + 1, nc + 1), np.int64)
    for pred, truth in zip(preds, truths, strict=True):
        keep = pred.scores >= score_thr
        boxes, labels = pred.boxes[keep], pred.labels[keep]
        order = np.argsort(-pred.scores[keep])
        used = np.zeros(len(truth.boxes), bool)
        ious = iou_matrix(boxes, truth.boxes) if len(boxes) and len(truth.boxes) else None
        for i in order:
            if ious is not None:
                cand = np.where(used, -1.0, ious[i])
                j = int(cand.argmax())
                if cand[j] >= iou:
                    used[j] = True
                    matrix[int(truth.labels[j]), int(labels[i])] += 1
                    continue
            matrix[nc, int(labels[i])] += 1  # false positive on background
        for j in np.where(~used)[0]:
            matrix[int(truth.labels[j]), nc] += 1  # missed
    return matrix


def plot_confusion(
    preds: list[Boxes], truths: list[Boxes], labels: tuple[str, ...], score_thr: float, path: Path
) -> Path:
    """Save the confusion matrix at IoU 0.5 as an annotated heatmap at `path`; returns `path`."""
    matrix = confusion(preds, truths, len(labels), score_thr)
    names = [*labels, "background"]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 1.0 * len(names) + 1.5))
    ax.imshow(np.log1p(matrix), cmap="Blues")
    for (r, c), v in np.ndenumerate(matrix):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(names)), [*labels, "missed"], rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion (IoU>=0.5, score>={score_thr})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
