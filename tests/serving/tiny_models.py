"""Tiny ONNX graphs built at test time (onnx helper API), and repository folders for them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vision.config import ModelConfig, parse_config, write_config

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def brightness_segmenter(path: Path, score_output: str = "") -> Path:
    """images [N,3,H,W] -> logits [N,2,H,W]: class 1 where the grey level is above 0.5; with
    `score_output`, also that output [N]: the image's mean grey level (an image-level score)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["grey", "half"], ["fg"]),
        helper.make_node("Neg", ["fg"], ["bg"]),
        helper.make_node("Concat", ["bg", "fg"], ["logits_raw"], axis=1),
        helper.make_node("Mul", ["logits_raw", "gain"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, "H", "W"])]
    if score_output:
        nodes.append(
            helper.make_node("ReduceMean", ["grey"], [score_output], axes=[1, 2, 3], keepdims=0)
        )
        outputs.append(helper.make_tensor_value_info(score_output, TensorProto.FLOAT, ["N"]))
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        outputs,
        initializer=[
            numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
            numpy_helper.from_array(np.array(20.0, dtype=np.float32), "gain"),
        ],
    )
    return _save(graph, path)


def fixed_box_detector(path: Path, boxes_xywh: np.ndarray, scores: np.ndarray, size: int) -> Path:
    """images [N,3,size,size] -> output0 [N,4+nc,A] (YOLOv8 layout) with fixed boxes and scores."""
    table = np.concatenate([boxes_xywh.T, scores.T], axis=0)[np.newaxis].astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),  # [N,1,1,1]
        helper.make_node("Reshape", ["m", "shape3"], ["m3"]),  # [N,1,1]
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
        helper.make_node("Add", ["z", "table"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed_boxes",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", *table.shape[1:]])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "shape3"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(table, "table"),
        ],
    )
    return _save(graph, path)


def segmenter_config(name: str = "bright", **batching) -> ModelConfig:
    return parse_config(
        {
            "name": name,
            "task": "segmentation",
            "labels": ["background", "bright"],
            "input": {"name": "images", "height": 64, "width": 64, "channels": 3},
            "preprocess": {"resize": "stretch"},
            "postprocess": {"type": "argmax"},
            "version_policy": {"latest": 2},
            "batching": {"max_batch_size": 8, "max_queue_delay_ms": 2, **batching},
        }
    )


def detector_config(name: str = "boxes") -> ModelConfig:
    return parse_config(
        {
            "name": name,
            "task": "detection",
            "labels": ["defect", "dust"],
            "input": {"name": "images", "height": 128, "width": 128, "channels": 3},
            "preprocess": {"resize": "letterbox"},
            "postprocess": {"type": "yolov8", "score_threshold": 0.3, "iou_threshold": 0.5},
        }
    )


# Two overlapping "defect" boxes (one suppressed by NMS), one "dust" box, one below threshold.
DETECTOR_BOXES = np.array(
    [[40, 40, 20, 20], [41, 41, 20, 20], [90, 70, 10, 30], [20, 100, 8, 8]], dtype=np.float32
)
DETECTOR_SCORES = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.1, 0.05]], dtype=np.float32)


def build_repository(root: Path) -> Path:
    """A repository with a segmenter (versions 1 and 2), the same segmenter with an image-level
    score output (`bright-scored`) and a detector."""
    seg = segmenter_config()
    write_config(seg, root / seg.name)
    brightness_segmenter(root / seg.name / "1" / "model.onnx")
    brightness_segmenter(root / seg.name / "2" / "model.onnx")
    # the brightness fraction is a score, not a defect probability: no gate on the masks
    post = dataclasses.replace(
        seg.postprocess, image_score_output="brightness", image_score_gate=0.0
    )
    scored = dataclasses.replace(seg, name="bright-scored", postprocess=post)
    write_config(scored, root / scored.name)
    brightness_segmenter(root / scored.name / "1" / "model.onnx", score_output="brightness")
    det = detector_config()
    write_config(det, root / det.name)
    fixed_box_detector(root / det.name / "1" / "model.onnx", DETECTOR_BOXES, DETECTOR_SCORES, 128)
    return root


def explain_graph(
    path: Path, kind: str, size: int, output_table: np.ndarray | None = None, gain: float = 20.0
) -> Path:
    """An explain-graph stand-in with the real signature; its "CAM" is the grey level.

    `gain`: the segmentation logits' scale; 20 reproduces `brightness_segmenter` exactly.

    Segmentation: images, target_class, target_mask -> logits, cam.
    Detection: images, target_class, target_anchor -> output0 (fixed table), cam.
    """
    aux_name = "target_mask" if kind == "segmentation" else "target_anchor"
    aux_type = (
        helper.make_tensor_value_info(aux_name, TensorProto.FLOAT, ["N", 1, size, size])
        if kind == "segmentation"
        else helper.make_tensor_value_info(aux_name, TensorProto.INT64, ["N"])
    )
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Squeeze", ["grey", "one"], ["cam"]),
    ]
    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "one")]
    if kind == "segmentation":
        nodes += [
            helper.make_node("Sub", ["grey", "half"], ["fg"]),
            helper.make_node("Neg", ["fg"], ["bg"]),
            helper.make_node("Concat", ["bg", "fg"], ["raw"], axis=1),
            helper.make_node("Mul", ["raw", "gain"], ["logits"]),
        ]
        inits += [
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
            numpy_helper.from_array(np.array(gain, np.float32), "gain"),
        ]
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, size, size])
    else:
        nodes += [
            helper.make_node("ReduceMean", ["images"], ["m"], keepdims=1),
            helper.make_node("Reshape", ["m", "shape3"], ["m3"]),
            helper.make_node("Mul", ["m3", "zero"], ["z"]),
            helper.make_node("Add", ["z", "table"], ["output0"]),
        ]
        inits += [
            numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape3"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(output_table, "table"),
        ]
        out = helper.make_tensor_value_info(
            "output0", TensorProto.FLOAT, ["N", *output_table.shape[1:]]
        )
    graph = helper.make_graph(
        nodes,
        f"explain_{kind}",
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size]),
            helper.make_tensor_value_info("target_class", TensorProto.INT64, ["N"]),
            aux_type,
        ],
        [out, helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", size, size])],
        initializer=inits,
    )
    return _save(graph, path)


def build_explainable_repository(root: Path) -> Path:
    """Segmenters and a detector, each with an explain graph stand-in."""

    from vision.config import ExplainSpec

    explain = ExplainSpec(file="model.explain.onnx", method="gradcam")
    seg = dataclasses.replace(segmenter_config("bright-x"), explain=explain)
    write_config(seg, root / seg.name)
    brightness_segmenter(root / seg.name / "1" / "model.onnx")
    explain_graph(root / seg.name / "1" / "model.explain.onnx", "segmentation", 64)
    det = dataclasses.replace(detector_config("boxes-x"), explain=explain)
    write_config(det, root / det.name)
    fixed_box_detector(root / det.name / "1" / "model.onnx", DETECTOR_BOXES, DETECTOR_SCORES, 128)
    table = np.concatenate([DETECTOR_BOXES.T, DETECTOR_SCORES.T], axis=0)[np.newaxis]
    explain_graph(
        root / det.name / "1" / "model.explain.onnx", "detection", 128, table.astype(np.float32)
    )
    # Its explain graph's logits differ from its model's: heat maps need both runs.
    other = dataclasses.replace(segmenter_config("bright-y"), explain=explain)
    write_config(other, root / other.name)
    brightness_segmenter(root / other.name / "1" / "model.onnx")
    explain_graph(root / other.name / "1" / "model.explain.onnx", "segmentation", 64, gain=21.0)
    return root


def build_inspection_repository(root: Path) -> Path:
    """`build_repository`'s models, plus for Inspect streams: `boxes-rules` (the detector with
    a defect rule inside a region and a dust rule that never fires), `bright-rules` (the scored
    segmenter with a region-and-area rule and an image-score rule), `bright-gated` (a segmenter
    for tests that hold its inference), `bright-serial` (the same without batching: one frame
    per run, the others queued) and `no-versions` (a config without versions:
    UNAVAILABLE)."""
    build_repository(root)
    inspection = {
        "rules": [
            {"name": "defect", "classes": ["defect"], "min_score": 0.5, "roi": [0, 0, 64, 64]},
            {"name": "dust", "classes": ["dust"], "min_score": 0.8},
        ]
    }
    det = detector_config("boxes-rules").to_dict()
    det = parse_config({**det, "inspection": inspection})
    write_config(det, root / det.name)
    fixed_box_detector(root / det.name / "1" / "model.onnx", DETECTOR_BOXES, DETECTOR_SCORES, 128)
    seg = segmenter_config("bright-rules").to_dict()
    seg["postprocess"]["image_score_output"] = "brightness"
    seg["postprocess"]["image_score_gate"] = 0.0
    seg["inspection"] = {
        "rules": [
            {"name": "edge", "classes": ["bright"], "roi": [0, 0, 32, 90], "min_area_px": 50},
            {"name": "image-score", "image_score": 0.9},
        ]
    }
    seg = parse_config(seg)
    write_config(seg, root / seg.name)
    brightness_segmenter(root / seg.name / "1" / "model.onnx", score_output="brightness")
    gated = segmenter_config("bright-gated")
    write_config(gated, root / gated.name)
    brightness_segmenter(root / gated.name / "1" / "model.onnx")
    serial = segmenter_config("bright-serial", max_batch_size=1)
    write_config(serial, root / serial.name)
    brightness_segmenter(root / serial.name / "1" / "model.onnx")
    write_config(segmenter_config("no-versions"), root / "no-versions")
    return root


# --- volumetric ------------------------------------------------------------------------------

VOLUME_PATCH = (8, 12, 10)


def volume_segmenter(path: Path, patch: tuple[int, int, int] = VOLUME_PATCH) -> Path:
    """volume [N,1,d,h,w] -> logits [N,2,d,h,w]: class 1 where a 3x3x3 weighted mean (centre
    0.8, the 26 neighbours 0.2 together; zero padded at the patch border) is above 0.5.

    On a 0 / 1 phantom the mask is the phantom itself (volumes are exact), while each logit
    depends on the neighbours and on where the window's border lies, so the sliding-window
    blending matters as with a real network."""
    kernel = np.full((1, 1, 3, 3, 3), 0.2 / 26.0, dtype=np.float32)
    kernel[0, 0, 1, 1, 1] = 0.8
    nodes = [
        helper.make_node("Conv", ["volume", "kernel"], ["mean"], pads=[1, 1, 1, 1, 1, 1]),
        helper.make_node("Sub", ["mean", "half"], ["fg"]),
        helper.make_node("Neg", ["fg"], ["bg"]),
        helper.make_node("Concat", ["bg", "fg"], ["raw"], axis=1),
        helper.make_node("Mul", ["raw", "gain"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "volume_threshold",
        [helper.make_tensor_value_info("volume", TensorProto.FLOAT, ["N", 1, *patch])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, *patch])],
        initializer=[
            numpy_helper.from_array(kernel, "kernel"),
            numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
            numpy_helper.from_array(np.array(8.0, dtype=np.float32), "gain"),
        ],
    )
    return _save(graph, path)


def volume_config(
    name: str = "tiny-volume",
    spacing_mm: tuple[float, float, float] = (2.0, 1.0, 1.0),
    patch: tuple[int, int, int] = VOLUME_PATCH,
    **volume,
) -> ModelConfig:
    """A volumetric config over `volume_segmenter`: intensities as stored (0 / 1 phantoms)."""
    return parse_config(
        {
            "name": name,
            "task": "volumetric_segmentation",
            "labels": ["background", "bright"],
            "input": {"name": "volume", "layout": "NCDHW", "channels": 1},
            "preprocess": {"channel_order": "GRAY"},
            "postprocess": {"type": "argmax"},
            "batching": {"max_batch_size": 8, "max_queue_delay_ms": 2},
            "volume": {
                "spacing_mm": list(spacing_mm),
                "patch": list(patch),
                "overlap": 0.5,
                "blend": "gaussian",
                "normalisation": "none",
                **volume,
            },
        }
    )


def build_volume_repository(root: Path, config: ModelConfig | None = None) -> Path:
    """A repository with the tiny volumetric model (`volume_config`) and the 2D segmenter."""
    config = config or volume_config()
    write_config(config, root / config.name)
    volume_segmenter(root / config.name / "1" / "model.onnx", tuple(config.volume.patch))
    seg = segmenter_config()
    write_config(seg, root / seg.name)
    brightness_segmenter(root / seg.name / "1" / "model.onnx")
    return root
