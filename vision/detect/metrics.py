"""Detection metrics in numpy: VOC-style AP, the DeepPCB protocol, COCO mAP via pycocotools."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Boxes:
    """Boxes of one image: `boxes` [N, 4] x1 y1 x2 y2, `labels` [N], `scores` [N] (1 for truth),
    `ignore` [N] (truth only: VOC `difficult` / COCO `iscrowd` boxes, neither a true positive
    when found nor a miss when not)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    ignore: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        if len(self.ignore) != len(self.labels):
            self.ignore = np.zeros(len(self.labels), bool)

    @classmethod
    def truth(
        cls, boxes: np.ndarray, labels: np.ndarray, ignore: np.ndarray | None = None
    ) -> Boxes:
        """Ground-truth boxes: `boxes` reshaped to [N, 4] float32, with score 1 each."""
        flags = np.zeros(len(labels), bool) if ignore is None else np.asarray(ignore, bool)
        return cls(
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(labels),
            np.ones(len(labels)),
            flags,
        )


def instances_per_class(truths: list[Boxes], num_classes: int) -> list[int]:
    """The number of (not ignored) true boxes of each class."""
    counts = np.zeros(num_classes, np.int64)
    for truth in truths:
        np.add.at(counts, np.asarray(truth.labels, np.int64)[~truth.ignore], 1)
    return counts.tolist()


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of [N, 4] and [M, 4] boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def _match_class(preds: list[Boxes], truths: list[Boxes], cls: int, thr: float, strict: bool):
    """Scores, true-positive flags (greedy by score) and the number of truths of one class.
    A detection that matches only an ignored truth (difficult / crowd) is left out, as VOC
    and COCO evaluation do; ignored truths are not counted."""
    scores, flags, total = [], [], 0
    for pred, truth in zip(preds, truths, strict=True):
        of_class = truth.labels == cls
        gt, ignored = truth.boxes[of_class], truth.ignore[of_class]
        total += int((~ignored).sum())
        keep = pred.labels == cls
        order = np.argsort(-pred.scores[keep], kind="stable")
        boxes, conf = pred.boxes[keep][order], pred.scores[keep][order]
        used = ignored.copy()
        ious = iou_matrix(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), 0))
        for i in range(len(boxes)):
            hit, j = _best_match(ious[i], used, thr, strict)
            if hit:
                used[j] = True
            elif _best_match(ious[i], ~ignored, thr, strict)[0]:
                continue  # matches a difficult box only: neither true nor false positive
            scores.append(conf[i])
            flags.append(hit)
    return np.asarray(scores), np.asarray(flags, bool), total


def _best_match(ious: np.ndarray, excluded: np.ndarray, thr: float, strict: bool):
    """(whether the best IoU among the boxes not `excluded` reaches `thr`, its index)."""
    if not len(ious):
        return False, -1
    cand = np.where(~excluded, ious, -1.0)
    j = int(cand.argmax())
    return bool(cand[j] > thr if strict else cand[j] >= thr), j


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
    """AP of each class at one IoU threshold (`strict`: IoU must exceed it, as DeepPCB); NaN
    for a class with no true box in `truths` (absent: no AP, not AP 0)."""
    present = np.asarray(instances_per_class(truths, num_classes)) > 0
    return np.array(
        [
            average_precision(*pr_curve(preds, truths, c, thr, strict)[:2])
            if present[c]
            else np.nan
            for c in range(num_classes)
        ]
    )


def mean_present(values: np.ndarray) -> float:
    """The mean over classes present in the split (NaN entries are absent classes)."""
    values = np.asarray(values, float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else 0.0


def per_class_or_absent(labels: tuple[str, ...], values: np.ndarray) -> dict[str, float | None]:
    """`{label: value rounded}`, None where the class is absent from the split."""
    return {
        name: (None if not np.isfinite(v) else round(float(v), 4))
        for name, v in zip(labels, values, strict=True)
    }


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
        "map": mean_present(ap),
        "ap": ap.tolist(),
        **f_score(preds, truths, num_classes, 0.33, score_thr, strict=True),
    }


def coco_map(preds: list[Boxes], truths: list[Boxes], labels: tuple[str, ...]) -> dict:
    """mAP@0.5, mAP@[.5:.95] (means over the classes present) and per-class AP@0.5 through
    pycocotools; a class without a true box is None (absent), not 0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (pred, truth) in enumerate(zip(preds, truths, strict=True)):
        images.append({"id": i, "width": 1, "height": 1})
        for box, label, ignore in zip(truth.boxes, truth.labels, truth.ignore, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": int(ignore),
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
        per_class.append(float(p[p > -1].mean()) if (p > -1).any() else None)
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
