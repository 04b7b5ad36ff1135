"""Detection metrics in numpy: VOC-style AP, the DeepPCB protocol, COCO mAP via pycocotools."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np


@dataclass
class Boxes:
    """Boxes of one image: `boxes` [N, 4] x1 y1 x2 y2, `labels` [N], `scores` [N] (1 for truth)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def truth(cls, boxes: np.ndarray, labels: np.ndarray) -> Boxes:
        """Ground-truth boxes: `boxes` reshaped to [N, 4] float32, with score 1 each."""
        return cls(
            np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels), np.ones(len(labels))
        )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of [N, 4] and [M, 4] boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def _match_class(preds: list[Boxes], truths: list[Boxes], cls: int, thr: float, strict: bool):
    """Scores, true-positive flags (greedy by score) and the number of truths of one class."""
    scores, flags, total = [], [], 0
    for pred, truth in zip(preds, truths, strict=True):
        gt = truth.boxes[truth.labels == cls]
        total += len(gt)
        keep = pred.labels == cls
        order = np.argsort(-pred.scores[keep], kind="stable")
        boxes, conf = pred.boxes[keep][order], pred.scores[keep][order]
        used = np.zeros(len(gt), bool)
        ious = iou_matrix(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), 0))
        for i in range(len(boxes)):
            cand = np.where(~used, ious[i], -1.0) if len(gt) else np.zeros(0)
            j = int(cand.argmax()) if len(cand) else -1
            hit = j >= 0 and (cand[j] > thr if strict else cand[j] >= thr)
            if hit:
                used[j] = True
            scores.append(conf[i])
            flags.append(hit)
    return np.asarray(scores), np.asarray(flags, bool), total


def pr_curve(preds: list[Boxes], truths: list[Boxes], cls: int, thr: float, strict: bool = False):
    """(precision, recall, scores) of one class, sorted by descending score."""
    scores, flags, total = _match_class(preds, truths, cls, thr, strict)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(flags[order])
    fp = np.cumsum(~flags[order])
    recall = tp / max(total, 1)
    precision = tp / np.maximum(tp + fp, 1e-9)
    return precision, recall, scores[order]


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+)."""
    if len(precision) == 0:
        return 0.0
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def ap_per_class(
    preds: list[Boxes],
    truths: list[Boxes],
    num_classes: int,
    thr: float = 0.5,
    strict: bool = False,
) -> np.ndarray:
    """AP of each class at one IoU threshold (`strict`: IoU must exceed it, as DeepPCB)."""
    return np.array(
        [
            average_precision(*pr_curve(preds, truths, c, thr, strict)[:2])
            for c in range(num_classes)
        ]
    )


def f_score(
    preds: list[Boxes],
    truths: list[Boxes],
    num_classes: int,
    thr: float,
    score_thr: float,
    strict: bool = False,
) -> dict[str, float]:
    """Precision, recall and F-score of the detections scoring at least `score_thr`."""
    tp = n_pred = n_true = 0
    for c in range(num_classes):
        scores, flags, total = _match_class(preds, truths, c, thr, strict)
        keep = scores >= score_thr
        tp += int(flags[keep].sum())
        n_pred += int(keep.sum())
        n_true += total
    precision, recall = tp / max(n_pred, 1), tp / max(n_true, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"precision": precision, "recall": recall, "f_score": f1}


def best_f(
    preds: list[Boxes], truths: list[Boxes], num_classes: int, thr: float, strict: bool = False
) -> dict[str, float]:
    """The score threshold (0.05 steps) with the highest F-score, and that F-score."""
    best = {"f_score": -1.0}
    for score_thr in np.arange(0.05, 0.96, 0.05):
        f = f_score(preds, truths, num_classes, thr, float(score_thr), strict)
        if f["f_score"] > best["f_score"]:
            best = {**f, "score_threshold": round(float(score_thr), 2)}
    return best


def deeppcb_protocol(preds: list[Boxes], truths: list[Boxes], num_classes: int, score_thr: float):
    """DeepPCB: a detection counts when IoU > 0.33 with a box of the same class."""
    ap = ap_per_class(preds, truths, num_classes, 0.33, strict=True)
    return {
        "map": float(ap.mean()),
        "ap": ap.tolist(),
        **f_score(preds, truths, num_classes, 0.33, score_thr, strict=True),
    }


def coco_map(preds: list[Boxes], truths: list[Boxes], labels: tuple[str, ...]) -> dict:
    """mAP@0.5, mAP@[.5:.95] and per-class AP@0.5 through pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (pred, truth) in enumerate(zip(preds, truths, strict=True)):
        images.append({"id": i, "width": 1, "height": 1})
        for box, label in zip(truth.boxes, truth.labels, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box, label, score in zip(pred.boxes, pred.labels, pred.scores, strict=True):
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(label),
                    "score": float(score),
                    "bbox": [
                        float(box[0]),
                        float(box[1]),
                        float(box[2] - box[0]),
                        float(box[3] - box[1]),
                    ],
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k, "name": n} for k, n in enumerate(labels)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 300]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]; area "all", maxDets 300
    valid = precision[:, :, :, 0, -1]
    per_class = []
    for k in range(len(labels)):
        p = valid[0, :, k]
        per_class.append(float(p[p > -1].mean()) if (p > -1).any() else 0.0)
    return {
        "map50": _mean_valid(valid[0]),
        "map50_95": _mean_valid(valid),
        "ap50_per_class": dict(zip(labels, per_class, strict=True)),
    }


def _mean_valid(values: np.ndarray) -> float:
    """Mean over classes with ground truth (pycocotools marks the others -1)."""
    per_class = [values[..., k] for k in range(values.shape[-1])]
    means = [float(v[v > -1].mean()) for v in per_class if (v > -1).any()]
    return float(np.mean(means)) if means else 0.0
