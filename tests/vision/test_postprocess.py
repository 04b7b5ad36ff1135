"""YOLOv8 decoding with NMS, and argmax/sigmoid masks mapped back to the original image."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from vision.config import PostprocessSpec
from vision.errors import ConfigError
from vision.postprocess import decode, gate_score, nms, segmentation_probabilities
from vision.types import DetectionResult, PreprocessMeta, SegmentationResult

LABELS = ("a", "b", "c")
# A 1280x640 image letterboxed into 640x640: scale 0.5, 160 px bars above and below.
LETTERBOX = PreprocessMeta(640, 1280, 0.5, 0.5, 0.0, 160.0, 640, 640)


def _yolo_output(boxes: list[tuple[float, float, float, float, int, float]]) -> np.ndarray:
    """[4+nc, 8400] with the given (cx, cy, w, h, class, score) anchors, the rest zero."""
    out = np.zeros((4 + len(LABELS), 8400), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(boxes):
        anchor = 100 + 37 * i
        out[:4, anchor] = (cx, cy, w, h)
        out[4 + cls, anchor] = score
    return out


def _decode_yolo(output: np.ndarray, **spec: object) -> DetectionResult:
    result = decode({"output0": output}, LETTERBOX, PostprocessSpec(type="yolov8", **spec), LABELS)
    assert isinstance(result, DetectionResult)
    return result


BOXES = [
    (200.0, 300.0, 100.0, 60.0, 0, 0.9),  # kept
    (203.0, 302.0, 100.0, 60.0, 0, 0.8),  # duplicate of the first: suppressed
    (201.0, 300.0, 98.0, 60.0, 1, 0.7),  # same place, other class: kept (per-class NMS)
    (500.0, 400.0, 40.0, 40.0, 2, 0.6),  # elsewhere: kept
    (400.0, 400.0, 40.0, 40.0, 2, 0.1),  # below the score threshold
]


def test_yolov8_threshold_nms_and_original_coordinates() -> None:
    detections = _decode_yolo(_yolo_output(BOXES)).detections
    assert [(d.class_id, d.label) for d in detections] == [(0, "a"), (1, "b"), (2, "c")]
    assert [d.score for d in detections] == pytest.approx([0.9, 0.7, 0.6])
    first = detections[0]  # model (150, 270, 250, 330) -> original ((x)/0.5, (y-160)/0.5)
    assert (first.x1, first.y1, first.x2, first.y2) == pytest.approx((300, 220, 500, 340))


def test_yolov8_transposed_layout_and_class_agnostic() -> None:
    output = _yolo_output(BOXES)
    assert _decode_yolo(output.T).detections == _decode_yolo(output).detections
    agnostic = _decode_yolo(output, class_agnostic_nms=True).detections
    assert [d.class_id for d in agnostic] == [0, 2]


def test_yolov8_clip_limit_and_empty() -> None:
    edge = _decode_yolo(_yolo_output([(5.0, 170.0, 40.0, 40.0, 0, 0.9)])).detections[0]
    assert (edge.x1, edge.y1) == (0.0, 0.0)
    assert _decode_yolo(_yolo_output(BOXES), max_detections=2).detections[-1].class_id == 1
    assert _decode_yolo(np.zeros((7, 8400), np.float32)).detections == []
    assert _decode_yolo(_yolo_output(BOXES), score_threshold=0.95).detections == []


def test_yolov8_many_anchors_is_fast() -> None:
    rng = np.random.default_rng(0)
    output = np.empty((7, 8400), np.float32)
    output[:2] = rng.uniform(0, 640, (2, 8400))
    output[2:4] = rng.uniform(5, 80, (2, 8400))
    output[4:] = rng.uniform(0.3, 1.0, (3, 8400))
    start = time.perf_counter()
    detections = _decode_yolo(output, max_detections=300).detections
    assert time.perf_counter() - start < 2.0
    assert len(detections) == 300


def test_nms_matches_pairwise_rule() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], float)
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5, 100).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.5, 2).tolist() == [1, 2]


# ---------------------------------------------------------------- segmentation

# A 100x200 image letterboxed into 64x64: scale 0.32, 16 px bars top and bottom.
SEG_META = PreprocessMeta(100, 200, 0.32, 0.32, 0.0, 16.0, 64, 64)


def _logits(channels: int, size: int = 32) -> np.ndarray:
    """Logits at half the model resolution: class 1 left, background strip, class 2 right."""
    logits = np.full((channels, size, size), -4.0, np.float32)
    logits[0] = 4.0
    band = slice(size // 4, 3 * size // 4)  # the image area inside the bars
    logits[1, band, : size // 2 - 4] = 8.0
    if channels > 2:
        logits[2, band, size // 2 :] = 8.0
    return logits


def test_argmax_masks_in_original_size() -> None:
    spec = PostprocessSpec(type="argmax")
    result = decode({"logits": _logits(3)}, SEG_META, spec, LABELS)
    assert isinstance(result, SegmentationResult)
    assert [(m.class_id, m.label) for m in result.masks] == [(1, "b"), (2, "c")]
    left, right = (m.mask for m in result.masks)
    assert left.shape == (100, 200)
    assert left[:, :70].all() and not left[:, 80:].any()
    assert right[:, 105:].all() and not right[:, :95].any()
    assert result.masks[0].score > 0.9
    report_all = PostprocessSpec(type="argmax", background_class=-1)
    everything = decode({"logits": _logits(3)}, SEG_META, report_all, LABELS)
    assert [m.class_id for m in everything.masks] == [0, 1, 2]
    assert everything.masks[0].mask[:, 80:95].all()


def test_sigmoid_masks_and_probabilities() -> None:
    logits = _logits(3)
    spec = PostprocessSpec(type="sigmoid", output="masks")
    result = decode({"other": np.zeros(3), "masks": logits}, SEG_META, spec, LABELS)
    assert [m.class_id for m in result.masks] == [0, 1, 2]
    assert result.masks[0].mask.all()
    probs = segmentation_probabilities(logits, SEG_META, "sigmoid")
    assert probs.shape == (3, 100, 200) and probs.dtype == np.float32
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    soft = segmentation_probabilities(logits, SEG_META, "argmax")
    np.testing.assert_allclose(soft.sum(axis=0), 1.0, atol=1e-5)


def test_missing_output_name() -> None:
    with pytest.raises(ConfigError, match="nope"):
        decode({"logits": _logits(2)}, SEG_META, PostprocessSpec(output="nope"), LABELS)


def test_yolov8_shape_must_fit_labels() -> None:
    with pytest.raises(ConfigError, match="4 box values \\+ 3 class scores"):
        _decode_yolo(np.zeros((9, 8400), np.float32))


def test_max_regions_keeps_the_strongest_regions() -> None:
    """`max_regions`: per class, only the N regions of highest mean probability are reported."""
    from vision.postprocess import strongest_regions

    logits = np.full((2, 40, 40), -4.0, np.float32)
    for (y, x), strength in (((5, 5), 1.0), ((5, 25), 6.0), ((25, 15), 3.0)):
        logits[1, y : y + 8, x : x + 8] = strength  # three blobs, middle one strongest
    meta = PreprocessMeta(40, 40, 1.0, 1.0, 0.0, 0.0, 40, 40)
    labels = ("background", "defect")
    every = decode({"logits": logits}, meta, PostprocessSpec(type="argmax"), labels)
    assert every.masks[0].mask.sum() == 3 * 64
    one = decode({"logits": logits}, meta, PostprocessSpec(type="argmax", max_regions=1), labels)
    assert one.masks[0].mask.sum() == 64 and one.masks[0].mask[5:13, 25:33].all()
    two = decode({"logits": logits}, meta, PostprocessSpec(type="argmax", max_regions=2), labels)
    assert two.masks[0].mask.sum() == 128 and not two.masks[0].mask[5:13, 5:13].any()
    prob = segmentation_probabilities(logits, meta, "argmax")[1]
    assert strongest_regions(prob > 0.5, prob, 0).sum() == 3 * 64


def test_image_score_output_is_read_per_item_and_checked() -> None:
    """`image_score_output`: the named output's one value per item becomes the result's image
    score; unset leaves it None; a missing output or one with several values is a ConfigError."""
    spec = PostprocessSpec(type="argmax", output="logits", image_score_output="defect_score")
    outputs = {"logits": _logits(3), "defect_score": np.float32(0.875)}
    assert decode(outputs, SEG_META, spec, LABELS).image_score == 0.875
    plain = PostprocessSpec(type="argmax", output="logits")
    assert decode(outputs, SEG_META, plain, LABELS).image_score is None
    with pytest.raises(ConfigError, match="defect_score"):
        decode({"logits": _logits(3)}, SEG_META, spec, LABELS)
    with pytest.raises(ConfigError, match="2 values"):
        decode({**outputs, "defect_score": np.zeros(2)}, SEG_META, spec, LABELS)


def test_image_score_below_the_gate_serves_no_mask() -> None:
    """A segmenter with an image-level score says "no defect" with an empty mask below its
    `image_score_gate` (default 0.5), keeps its masks at or above it, and 0 turns it off."""
    spec = PostprocessSpec(type="argmax", output="logits", image_score_output="defect_score")
    low = {"logits": _logits(3), "defect_score": np.float32(0.2)}
    high = {"logits": _logits(3), "defect_score": np.float32(0.5)}
    gated = decode(low, SEG_META, spec, LABELS)
    assert gated.masks == [] and gated.image_score == pytest.approx(0.2)
    assert [m.class_id for m in decode(high, SEG_META, spec, LABELS).masks] == [1, 2]
    off = PostprocessSpec(
        type="argmax", output="logits", image_score_output="defect_score", image_score_gate=0.0
    )
    assert [m.class_id for m in decode(low, SEG_META, off, LABELS).masks] == [1, 2]


def test_the_gate_must_be_a_probability() -> None:
    from vision.config import parse_config

    base = {
        "name": "m",
        "task": "segmentation",
        "labels": ["background", "defect"],
        "postprocess": {"type": "argmax", "image_score_gate": 1.5},
    }
    with pytest.raises(ConfigError, match="image_score_gate"):
        parse_config(base)
    base["postprocess"] = {"type": "argmax", "gate_uses_mask_score": "yes"}
    with pytest.raises(ConfigError, match="gate_uses_mask_score: true or false"):
        parse_config(base)


def test_the_gate_can_weigh_the_mask_score_too() -> None:
    """`gate_uses_mask_score`: the gate compares the mean of the image score and the best served
    mask's score, so a confident mask keeps a hesitant image score's masks, and an image without
    a mask is judged on half its image score."""
    spec = PostprocessSpec(
        type="argmax",
        output="logits",
        image_score_output="defect_score",
        image_score_gate=0.6,
        gate_uses_mask_score=True,
    )
    hesitant = {"logits": _logits(3), "defect_score": np.float32(0.4)}
    served = decode(hesitant, SEG_META, spec, LABELS)
    best = max(m.score for m in served.masks)  # about 1: logits 8 against -4 and 4
    assert best > 0.8 and gate_score(0.4, [best], spec) == pytest.approx((0.4 + best) / 2)
    assert [m.class_id for m in served.masks] == [1, 2]
    image_only = dataclasses.replace(spec, gate_uses_mask_score=False)
    assert decode(hesitant, SEG_META, image_only, LABELS).masks == []
    assert gate_score(0.9, [], spec) == pytest.approx(0.45)
