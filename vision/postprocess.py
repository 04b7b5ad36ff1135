"""Raw model outputs (one item, no batch dim) -> detections or class masks in original coords."""

from __future__ import annotations

import cv2
import numpy as np

from vision.config import PostprocessSpec
from vision.errors import ConfigError
from vision.types import (
    ClassMask,
    Detection,
    DetectionResult,
    PreprocessMeta,
    SegmentationResult,
)

_MAX_WH = 7680.0  # class offset for batched NMS (as in Ultralytics)
_MAX_NMS = 30000  # boxes into NMS at most, best scores first


def select_output(outputs: dict[str, np.ndarray], name: str = "") -> np.ndarray:
    """The named output, or the first one when `name` is empty."""
    if not outputs:
        raise ConfigError("the model returned no outputs")
    if not name:
        return np.asarray(next(iter(outputs.values())))
    if name not in outputs:
        raise ConfigError(f"postprocess.output {name!r} is not among outputs {sorted(outputs)}")
    return np.asarray(outputs[name])


def _label(labels: tuple[str, ...], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class_{class_id}"


# ---------------------------------------------------------------- detection (YOLOv8 layout)


def yolov8_rows(output: np.ndarray, num_classes: int) -> np.ndarray:
    """The output as [A, 4+nc] rows, from [4+nc, A] (Ultralytics) or [A, 4+nc]."""
    out = np.asarray(output)
    while out.ndim > 2 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2:
        raise ConfigError(f"yolov8 output must be 2-D, got shape {list(output.shape)}")
    features = 4 + num_classes
    if out.shape[0] == features:
        return out.T
    if out.shape[1] == features:
        return out
    raise ConfigError(
        f"yolov8 output shape {list(out.shape)} does not fit 4 box values + {num_classes} "
        "class scores (one per label); check the config's labels against the model"
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N x M) of xyxy boxes `a` (N x 4) and `b` (M x 4)."""
    width = np.minimum(a[:, None, 2], b[None, :, 2])
    width -= np.maximum(a[:, None, 0], b[None, :, 0])
    np.maximum(width, 0, out=width)
    height = np.minimum(a[:, None, 3], b[None, :, 3])
    height -= np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(height, 0, out=height)
    inter = np.multiply(width, height, out=width)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    np.maximum(union, 1e-9, out=union)
    return np.divide(inter, union, out=inter)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int, block: int = 512
) -> np.ndarray:
    """Exact greedy NMS; indices of kept boxes, best first, at most `max_keep` (<= 0: all).

    Works through score-sorted blocks: each block is first checked against the boxes already
    kept, then resolved greedily with its own IoU matrix, so the Python loop does O(1) work per
    box and vector work only per kept box.
    """
    order = np.argsort(-scores, kind="stable")
    max_keep = max_keep if max_keep > 0 else len(order)
    sorted_boxes = boxes[order].astype(np.float64)
    keep: list[int] = []
    for start in range(0, len(order), block):
        candidates = np.arange(start, min(start + block, len(order)))
        if keep:
            hit = (box_iou(sorted_boxes[keep], sorted_boxes[candidates]) > iou_threshold).any(0)
            candidates = candidates[~hit]
        chunk = sorted_boxes[candidates]
        overlaps = box_iou(chunk, chunk) > iou_threshold
        suppressed = np.zeros(len(candidates), dtype=bool)
        for i, index in enumerate(candidates.tolist()):
            if suppressed[i]:
                continue
            keep.append(index)
            if len(keep) >= max_keep:
                return order[keep]
            suppressed |= overlaps[i]
    return order[np.asarray(keep, dtype=np.int64)]


def to_original(boxes: np.ndarray, meta: PreprocessMeta) -> np.ndarray:
    """xyxy boxes in model-input pixels -> original-image pixels, clipped to the image."""
    out = boxes.astype(np.float64, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - meta.pad_x) / meta.scale_x
    out[:, [1, 3]] = (out[:, [1, 3]] - meta.pad_y) / meta.scale_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, meta.original_width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, meta.original_height)
    return out


def decode_yolov8(
    output: np.ndarray, meta: PreprocessMeta, spec: PostprocessSpec, labels: tuple[str, ...]
) -> DetectionResult:
    """Decode one item of a YOLOv8 detect output: threshold, per-class NMS, map to original."""
    rows = yolov8_rows(output, len(labels)).astype(np.float32, copy=False)
    scores_all = rows[:, 4:]
    class_ids = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(rows)), class_ids]
    keep = scores > spec.score_threshold
    if not keep.any():
        return DetectionResult()
    anchors = np.flatnonzero(keep)
    rows, class_ids, scores = rows[keep], class_ids[keep], scores[keep]
    if len(scores) > _MAX_NMS:
        top = np.argpartition(-scores, _MAX_NMS)[:_MAX_NMS]
        rows, class_ids, scores, anchors = rows[top], class_ids[top], scores[top], anchors[top]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2] / 2, rows[:, 3] / 2
    boxes = np.stack([cx - w, cy - h, cx + w, cy + h], axis=1)
    offset = 0.0 if spec.class_agnostic_nms else class_ids[:, None] * _MAX_WH
    kept = nms(boxes + offset, scores, spec.iou_threshold, spec.max_detections)
    mapped = to_original(boxes[kept], meta)
    detections = [
        Detection(*map(float, box), float(score), int(cid), _label(labels, int(cid)), int(anchor))
        for box, score, cid, anchor in zip(
            mapped, scores[kept], class_ids[kept], anchors[kept], strict=True
        )
    ]
    return DetectionResult(detections=detections)


# ---------------------------------------------------------------- segmentation


def _chw(output: np.ndarray) -> np.ndarray:
    out = np.asarray(output, dtype=np.float32)
    while out.ndim > 3 and out.shape[0] == 1:
        out = out[0]
    if out.ndim == 2:
        out = out[None]
    if out.ndim != 3:
        raise ConfigError(f"segmentation output must be [C, H, W], got {list(out.shape)}")
    return out


def _resize_chw(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a [C, h, w] float array (cv2 takes at most 512 channels at once)."""
    if maps.shape[1:] == (height, width):
        return maps
    if maps.shape[0] == 1:  # cv2 reads the (possibly cropped) rows in place: no copy in or out
        return cv2.resize(maps[0], (width, height), interpolation=cv2.INTER_LINEAR)[None]
    parts = []
    for start in range(0, maps.shape[0], 512):
        hwc = np.ascontiguousarray(maps[start : start + 512].transpose(1, 2, 0))
        out = cv2.resize(hwc, (width, height), interpolation=cv2.INTER_LINEAR)
        parts.append(out[None] if out.ndim == 2 else out.transpose(2, 0, 1))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def to_original_maps(maps: np.ndarray, meta: PreprocessMeta) -> np.ndarray:
    """[C, h, w] maps over the model input -> [C, H, W] over the original image (pad undone)."""
    maps = _resize_chw(maps, meta.input_height, meta.input_width)
    x0, y0 = int(round(meta.pad_x)), int(round(meta.pad_y))
    x1 = min(meta.input_width, x0 + max(1, int(round(meta.original_width * meta.scale_x))))
    y1 = min(meta.input_height, y0 + max(1, int(round(meta.original_height * meta.scale_y))))
    crop = maps[:, y0:y1, x0:x1]
    return np.ascontiguousarray(_resize_chw(crop, meta.original_height, meta.original_width))


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax, float32."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted.astype(np.float32, copy=False)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32, copy=False)


def segmentation_probabilities(output: np.ndarray, meta: PreprocessMeta, kind: str) -> np.ndarray:
    """[C, H, W] float32 probabilities in original size: softmax (argmax) or sigmoid."""
    logits = to_original_maps(_chw(output), meta)
    if kind == "argmax":
        return softmax(logits.copy(), axis=0) if logits.shape[0] > 1 else sigmoid(logits)
    if kind == "sigmoid":
        return sigmoid(logits)
    raise ConfigError(f"postprocess type {kind!r} has no segmentation probabilities")


def strongest_regions(mask: np.ndarray, prob: np.ndarray, keep: int) -> np.ndarray:
    """`mask` reduced to its `keep` 8-connected regions of highest mean `prob` (0: all)."""
    if keep <= 0 or not mask.any():
        return mask
    count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count - 1 <= keep:
        return mask
    sums = np.bincount(regions.ravel(), weights=prob.ravel(), minlength=count)
    sizes = np.bincount(regions.ravel(), minlength=count)
    means = sums[1:] / np.maximum(sizes[1:], 1)
    kept = 1 + np.argsort(-means, kind="stable")[:keep]
    return np.isin(regions, kept)


def _class_mask(class_id: int, labels: tuple[str, ...], mask: np.ndarray, prob: np.ndarray):
    score = float(prob[mask].mean()) if mask.any() else float(prob.max())
    return ClassMask(class_id=class_id, label=_label(labels, class_id), mask=mask, score=score)


def decode_argmax(
    output: np.ndarray, meta: PreprocessMeta, spec: PostprocessSpec, labels: tuple[str, ...]
) -> SegmentationResult:
    """One mask per class present in the argmax map, background_class left out."""
    probs = segmentation_probabilities(output, meta, "argmax")
    if probs.shape[0] == 1:  # a single logit channel: foreground vs background
        fg, class_id = probs[0] > spec.mask_threshold, 1 if len(labels) > 1 else 0
        fg = strongest_regions(fg, probs[0], spec.max_regions)
        return SegmentationResult([_class_mask(class_id, labels, fg, probs[0])] if fg.any() else [])
    winner = probs.argmax(axis=0)
    masks = []
    for class_id in np.unique(winner):
        if int(class_id) == spec.background_class:
            continue
        mask = strongest_regions(winner == class_id, probs[class_id], spec.max_regions)
        masks.append(_class_mask(int(class_id), labels, mask, probs[class_id]))
    return SegmentationResult(masks=masks)


def decode_sigmoid(
    output: np.ndarray, meta: PreprocessMeta, spec: PostprocessSpec, labels: tuple[str, ...]
) -> SegmentationResult:
    """One mask per channel with any pixel above mask_threshold (class id = channel index)."""
    probs = segmentation_probabilities(output, meta, "sigmoid")
    masks = []
    for class_id, prob in enumerate(probs):
        mask = strongest_regions(prob > spec.mask_threshold, prob, spec.max_regions)
        if mask.any():
            masks.append(_class_mask(class_id, labels, mask, prob))
    return SegmentationResult(masks=masks)


DECODERS = {"yolov8": decode_yolov8, "argmax": decode_argmax, "sigmoid": decode_sigmoid}


def decode(
    outputs: dict[str, np.ndarray],
    meta: PreprocessMeta,
    spec: PostprocessSpec,
    labels: tuple[str, ...],
) -> DetectionResult | SegmentationResult:
    """Decode one item's outputs with the decoder `spec.type` names."""
    if spec.type not in DECODERS:
        raise ConfigError(f"unknown postprocess type {spec.type!r}")
    result = DECODERS[spec.type](select_output(outputs, spec.output), meta, spec, labels)
    if isinstance(result, SegmentationResult):
        result.image_score = image_score(outputs, spec.image_score_output)
        if result.image_score is not None:
            mask_scores = [m.score for m in result.masks]
            if gate_score(result.image_score, mask_scores, spec) < spec.image_score_gate:
                result.masks = []  # the image-level evidence says "no defect": no mask served
    return result


def gate_score(image_score: float, mask_scores: list[float], spec: PostprocessSpec) -> float:
    """What `image_score_gate` is compared with: the image score, or with
    `gate_uses_mask_score` the mean of it and the best mask's score (0 without a mask)."""
    if not spec.gate_uses_mask_score:
        return image_score
    return (image_score + max(mask_scores, default=0.0)) / 2


def image_score(outputs: dict[str, np.ndarray], name: str) -> float | None:
    """One item's image-level score from the output `name` (None when no output is named)."""
    if not name:
        return None
    if name not in outputs:
        raise ConfigError(f"image_score_output {name!r} is not a model output {sorted(outputs)}")
    value = np.asarray(outputs[name], np.float64).ravel()
    if value.size != 1:
        raise ConfigError(f"image_score_output {name!r} has {value.size} values per image, not 1")
    return float(value[0])
