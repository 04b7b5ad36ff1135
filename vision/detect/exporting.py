"""Checkpoint -> ONNX (YOLOv8 output layout) with a parity gate, then the repository entry."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms

from vision.config import (
    BatchingSpec,
    InputSpec,
    ModelConfig,
    PostprocessSpec,
    PreprocessSpec,
    load_config,
)
from vision.detect.data import DetectionDataset
from vision.detect.metrics import Boxes, ap_per_class, best_f
from vision.detect.model import Detector, build_model, spec_from_dict
from vision.detect.recipes import RECIPES, Recipe, from_dict
from vision.detect.train import splits
from vision.paths import default_repository

INPUT_NAME, OUTPUT_NAME = "images", "output0"
METRIC_TOLERANCE = 0.005  # 0.5 points of mAP


def load_checkpoint(path: Path) -> tuple[Detector, Recipe, tuple[str, ...], dict]:
    """The EMA model (eval mode), its recipe, labels and training state."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(spec_from_dict(ckpt["spec"]))
    model.load_state_dict(ckpt["ema"])
    return model.eval(), from_dict(ckpt["recipe"]), tuple(ckpt["labels"]), ckpt["state"]


def model_config(
    recipe: Recipe, labels: tuple[str, ...], name: str, score_threshold: float | None = None
) -> ModelConfig:
    """The serving config: preprocessing exactly as trained, YOLOv8 decoding.

    `score_threshold` defaults to the recipe's; export passes the best-F threshold on val.
    """
    return ModelConfig(
        name=name,
        task="detection",
        labels=labels,
        input=InputSpec(INPUT_NAME, "NCHW", recipe.height, recipe.width, recipe.channels),
        preprocess=PreprocessSpec(
            resize=recipe.resize,
            pad_value=114.0,
            scale=1.0 / 255.0,
            mean=(0.0,) * recipe.channels,
            std=(1.0,) * recipe.channels,
            channel_order="GRAY" if recipe.channels == 1 else "RGB",
        ),
        postprocess=PostprocessSpec(
            type="yolov8",
            output=OUTPUT_NAME,
            score_threshold=score_threshold or recipe.score_threshold,
            iou_threshold=recipe.iou_threshold,
            max_detections=300,
        ),
        batching=BatchingSpec(max_batch_size=8, max_queue_size=64),
        description=recipe.description,
    )


def decode_yolov8(
    output: np.ndarray, score_thr: float = 0.001, iou_thr: float = 0.5, max_det: int = 300
) -> Boxes:
    """One item's [4 + nc, A] output -> boxes (best class per anchor, per-class NMS)."""
    out = torch.from_numpy(np.ascontiguousarray(output)).T
    xy, wh = out[:, :2], out[:, 2:4]
    scores, labels = out[:, 4:].max(1)
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    keep = scores > score_thr
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, iou_thr)[:max_det]
    return Boxes(boxes[keep].numpy(), labels[keep].numpy(), scores[keep].numpy())


def _val_batches(recipe: Recipe, limit: int) -> tuple[list[np.ndarray], list[Boxes]]:
    _, val, _ = splits(recipe)
    val = val[:limit] if limit else val
    ds = DetectionDataset(val, recipe.channels, (recipe.height, recipe.width))
    items = [ds[i] for i in range(len(ds))]
    batches = [np.stack([x.numpy() for x, _ in items[i : i + 4]]) for i in range(0, len(items), 4)]
    truths = [Boxes.truth(t[:, 1:].numpy(), t[:, 0].long().numpy()) for _, t in items]
    return batches, truths


def _val_map(
    outputs: list[np.ndarray], truths: list[Boxes], recipe: Recipe, nc: int
) -> tuple[float, list[Boxes]]:
    preds = [decode_yolov8(o, iou_thr=recipe.iou_threshold) for batch in outputs for o in batch]
    ap = ap_per_class(preds, truths, nc, recipe.match_iou, strict=recipe.match_iou < 0.5)
    return float(ap.mean()), preds


def parity_gate(
    model: Detector,
    onnx_path: Path,
    recipe: Recipe,
    labels: tuple[str, ...],
    limit: int,
    tolerance: float,
) -> dict:
    """Max abs difference on real images and the val metric, torch vs ONNX Runtime."""
    from vision.export import parity_check
    from vision.runtime import OnnxModel

    batches, truths = _val_batches(recipe, limit)
    parity = parity_check(model, onnx_path, batches[:2] + [batches[0][:1]])
    session = OnnxModel(onnx_path)
    with torch.no_grad():
        torch_out = [model(torch.from_numpy(b)).numpy() for b in batches]
    onnx_out = [session.run({INPUT_NAME: b})[OUTPUT_NAME] for b in batches]
    torch_map, _ = _val_map(torch_out, truths, recipe, len(labels))
    onnx_map, preds = _val_map(onnx_out, truths, recipe, len(labels))
    strict = recipe.match_iou < 0.5
    val_f = best_f(preds, truths, len(labels), recipe.match_iou, strict)
    worst = max(parity["max_abs_diff"].values())
    passed = worst <= tolerance and abs(torch_map - onnx_map) <= METRIC_TOLERANCE
    return {
        **parity,
        "tolerance": tolerance,
        "val_images": len(truths),
        "val_metric": f"mAP@{recipe.match_iou}",
        "torch_val_map": round(torch_map, 4),
        "onnx_val_map": round(onnx_map, 4),
        "val_best_f": val_f,
        "passed": passed,
    }


def _card(recipe: Recipe, state: dict, gate: dict, name: str) -> dict:
    history = state.get("history", [])
    return {
        "name": name,
        "description": recipe.description,
        "architecture": "anchor-free one-stage detector: patchify stem, C2f (CSP) stages, "
        f"top-down FPN, decoupled heads at strides {list(recipe.strides)}; task-aligned "
        "assigner, quality-BCE classification + GIoU box loss; trained from scratch on CPU",
        "training": {
            "recipe": recipe.to_dict(),
            "epochs": state.get("epoch"),
            "steps": state.get("step"),
            "wall_clock_minutes": round(state.get("elapsed", 0.0) / 60, 1),
            "best_val_map": round(state.get("best", 0.0), 4),
            "val_curve": [round(h["val_map"], 4) for h in history],
        },
        "parity": gate,
        "intended_use": "research and demonstration; not validated for clinical or production "
        "inspection decisions",
    }


class _Calibration:
    def __init__(self, batches: list[np.ndarray]) -> None:
        self._items = iter([{INPUT_NAME: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_convs(onnx_path: Path, batches: list[np.ndarray], target: Path) -> Path:
    """Static QDQ int8 of the convolutions only.

    The decoded head (boxes in pixels concatenated with scores in 0..1) stays float: one shared
    activation scale for both would round every score to zero.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        _Calibration(batches),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv"],
    )
    prepared.unlink(missing_ok=True)
    onnx.checker.check_model(str(target))
    return target


def _write_int8(
    model_dir: Path, version: int, onnx_path: Path, recipe: Recipe, nc: int, limit: int
) -> dict:
    """Static int8 copy beside the float model, with its val metric (not gated, not served)."""
    from vision.runtime import OnnxModel

    calibration, _ = _val_batches(recipe, 16)
    target = model_dir / str(version) / "model.int8.onnx"
    quantize_convs(onnx_path, calibration, target)
    batches, truths = _val_batches(recipe, limit)
    session = OnnxModel(target)
    outputs = [session.run({INPUT_NAME: b})[OUTPUT_NAME] for b in batches]
    int8_map, _ = _val_map(outputs, truths, recipe, nc)
    return {
        "file": f"{version}/model.int8.onnx",
        "bytes": target.stat().st_size,
        "val_map": round(int8_map, 4),
        "note": "static QDQ int8 (calibrated on 16 val images); not served by default",
    }


def _keep_explain(config: ModelConfig, model_dir: Path) -> ModelConfig:
    """Carry an existing `explain` section over (its graph is regenerated by `vision.xai`)."""
    if not (model_dir / "config.yaml").is_file() or not hasattr(config, "explain"):
        return config
    old = load_config(model_dir)
    if old.explain.file:
        print(f"kept explain section ({old.explain.file}); regenerate it if the weights changed")
    return dataclasses.replace(config, explain=old.explain)


def _tensorrt_gate(
    model_dir: Path, version: int, recipe: Recipe, config: ModelConfig, args: argparse.Namespace
) -> bool:
    """FP16 TensorRT engine into the version's engine cache; output parity and val mAP against
    ONNX Runtime CPU, recorded in the model card. False when the gate fails."""
    from vision.export import read_card, write_card
    from vision.runtime import OnnxModel
    from vision.tensorrt import build_engine, tensorrt_parity, tensorrt_runtime

    version_dir = model_dir / str(version)
    onnx_path = version_dir / config.model_file
    runtime = tensorrt_runtime(config.runtime, version_dir / ".trt-cache")
    batches, truths = _val_batches(recipe, args.val_limit)
    engine = build_engine(onnx_path, runtime)
    parity = tensorrt_parity(onnx_path, batches[:2], runtime, engine=engine)
    nc = len(config.labels)
    maps = {}
    for key, session in (("cpu", OnnxModel(onnx_path)), ("tensorrt", engine)):
        outputs = [session.run({INPUT_NAME: b})[OUTPUT_NAME] for b in batches]
        maps[key] = round(_val_map(outputs, truths, recipe, nc)[0], 4)
    metric_ok = abs(maps["cpu"] - maps["tensorrt"]) <= METRIC_TOLERANCE
    parity |= {"val_map": maps, "passed": parity["passed"] and metric_ok}
    write_card(model_dir, {**read_card(model_dir), "tensorrt": parity})
    print(json.dumps({"tensorrt": parity}, indent=1))
    return bool(parity["passed"])


def run_export(args: argparse.Namespace) -> int:
    """Export, gate, write the repository entry; non-zero exit when the gate fails."""
    from vision.export import export_onnx, read_card, write_card, write_repository_entry

    torch.set_num_threads(1)
    model, recipe, labels, state = load_checkpoint(args.checkpoint)
    if args.recipe and args.recipe in RECIPES and args.recipe != recipe.name:
        raise SystemExit(f"checkpoint was trained with recipe {recipe.name!r}, not {args.recipe!r}")
    name = args.name or recipe.name
    model.export_mode = True
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        example = torch.zeros(1, recipe.channels, recipe.height, recipe.width)
        export_onnx(model, example, onnx_path, (INPUT_NAME,), (OUTPUT_NAME,), opset=18)
        gate = parity_gate(model, onnx_path, recipe, labels, args.val_limit, args.tolerance)
        print(json.dumps(gate, indent=1))
        if not gate["passed"]:
            print("parity gate FAILED: nothing written to the repository")
            return 1
        repo = args.repo or default_repository()
        config = model_config(recipe, labels, name, gate["val_best_f"].get("score_threshold"))
        config = _keep_explain(config, repo / name)
        model_dir = write_repository_entry(
            repo, config, onnx_path, _card(recipe, state, gate, name), version=args.version
        )
        if args.int8:
            card = read_card(model_dir)
            card["int8"] = _write_int8(
                model_dir, args.version, onnx_path, recipe, len(labels), args.val_limit
            )
            write_card(model_dir, card)
        if args.tensorrt and not _tensorrt_gate(model_dir, args.version, recipe, config, args):
            return 1
    run_dir = args.checkpoint.parent
    for extra in ("curve.png", "log.json"):
        if (run_dir / extra).is_file():
            shutil.copyfile(run_dir / extra, model_dir / f"training_{extra}")
    print(f"exported {name} v{args.version} to {model_dir}")
    return 0
