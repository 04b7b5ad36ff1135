"""Checkpoint -> ONNX (YOLOv8 output layout) with a parity gate, then the repository entry.

The gates score torch, ONNX Runtime, INT8 and TensorRT the same way: validation images decoded
and preprocessed by the server's `Pipeline`, each run wrapped in a `vision.loader.LoadedModel`,
detections decoded by `vision.postprocess` (the server's decoder and NMS) in original-image
coordinates.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vision.config import (
    BatchingSpec,
    InputSpec,
    ModelConfig,
    PostprocessSpec,
    PreprocessSpec,
    RuntimeSpec,
    load_config,
)
from vision.datasets.detection import Sample
from vision.detect.evaluate import predict_all
from vision.detect.metrics import Boxes, ap_per_class, best_f, mean_present
from vision.detect.model import Detector, build_model, spec_from_dict
from vision.detect.recipes import RECIPES, Recipe, from_dict
from vision.detect.train import splits
from vision.errors import ConfigError
from vision.loader import LoadedModel, open_model
from vision.paths import default_repository
from vision.pipeline import Pipeline
from vision.runtime import TensorSpec

INPUT_NAME, OUTPUT_NAME = "images", "output0"
METRIC_TOLERANCE = 0.005  # 0.5 points of mAP
CPU = RuntimeSpec(providers=("cpu",))


@dataclass(frozen=True)
class ExportOptions:
    """What `vision export` for a detector does (the CLI flags, parsed)."""

    checkpoint: Path
    repo: Path | None = None
    name: str | None = None
    recipe: str | None = None
    version: int = 1
    int8: bool = False
    tensorrt: bool = False
    parity_images: int = 8
    val_limit: int = 0
    tolerance: float = 1e-3


def load_checkpoint(path: Path) -> tuple[Detector, Recipe, tuple[str, ...], dict]:
    """The EMA model (eval mode), its recipe, labels and training state."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint (train one with `vision train`)")
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


class TorchSession:
    """The torch detector behind the session interface a `LoadedModel` runs (CPU, no grad)."""

    def __init__(self, model: Detector, recipe: Recipe) -> None:
        self.model = model.eval()
        shape = (-1, recipe.channels, recipe.height, recipe.width)
        self.inputs = [TensorSpec(INPUT_NAME, "float32", shape)]
        self.output_names = [OUTPUT_NAME]
        self.providers = ["torch-cpu"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's output for a batch of preprocessed images."""
        with torch.no_grad():
            return {OUTPUT_NAME: self.model(torch.from_numpy(feeds[INPUT_NAME])).numpy()}


def val_samples(recipe: Recipe, limit: int = 0) -> list[Sample]:
    """The recipe's validation images (the first `limit`, 0 = all)."""
    _, val, _ = splits(recipe)
    return val[:limit] if limit else val


def preprocessed(config: ModelConfig, samples: list[Sample]) -> list[np.ndarray]:
    """The images as the server feeds them to the model (decoded, Pipeline-preprocessed)."""
    from vision.io import decode_image

    pipeline = Pipeline(config)
    return [pipeline.preprocess(decode_image(s.image.read_bytes()))[0] for s in samples]


def parity_batches(tensors: list[np.ndarray], count: int) -> list[np.ndarray]:
    """Real inputs for the output parity check: batches of up to 4 of the first `count`, and a
    batch of one (another batch size than the others)."""
    used = tensors[: max(1, count)]
    return [np.stack(used[i : i + 4]) for i in range(0, len(used), 4)] + [used[0][None]]


def val_map(model: LoadedModel, samples: list[Sample], recipe: Recipe) -> tuple[float, list[Boxes]]:
    """The recipe's headline mAP of `model` on `samples`, and its predictions."""
    preds, _ = predict_all(model, samples)
    truths = [Boxes.truth(s.boxes, s.labels) for s in samples]
    nc = len(model.config.labels)
    ap = ap_per_class(preds, truths, nc, recipe.match_iou, strict=recipe.match_iou < 0.5)
    return mean_present(ap), preds


def parity_gate(
    model: Detector,
    onnx_path: Path,
    config: ModelConfig,
    recipe: Recipe,
    samples: list[Sample],
    opts: ExportOptions,
) -> dict:
    """Max abs difference on real images and the val metric, torch vs ONNX Runtime (CPU), both
    through the server's pipeline and decoder."""
    from vision.export import parity_check

    parity = parity_check(
        model, onnx_path, parity_batches(preprocessed(config, samples), opts.parity_images)
    )
    torch_map, _ = val_map(
        LoadedModel(config, TorchSession(model, recipe), Pipeline(config)), samples, recipe
    )
    onnx_map, preds = val_map(open_model(config, onnx_path, CPU), samples, recipe)
    truths = [Boxes.truth(s.boxes, s.labels) for s in samples]
    strict = recipe.match_iou < 0.5
    val_f = best_f(preds, truths, len(config.labels), recipe.match_iou, strict)
    worst = max(parity["max_abs_diff"].values())
    passed = worst <= opts.tolerance and abs(torch_map - onnx_map) <= METRIC_TOLERANCE
    return {
        **parity,
        "tolerance": opts.tolerance,
        "val_images": len(samples),
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


def write_int8(
    model_dir: Path, config: ModelConfig, onnx_path: Path, recipe: Recipe, opts: ExportOptions
) -> dict:
    """Static int8 copy beside the float model (`vision.quantize`, every op up to the last Conv,
    activations too, so int8 flows from conv to conv; the decoded head after it stays float),
    with its val metric (not gated, not served). A convolutions-only copy sat every conv between
    Quantize/DequantizeLinear and was 1.0-1.5x FP32; this one measured 1.3-2.0x (blood-cells)
    and 2.1x / 1.9x at batch 1 / 8 (pcb-defects) on this CPU, with no mAP loss (`bench.int8`)."""
    from vision.quantize import Int8Options, quantize_int8

    calibration = [t[None] for t in preprocessed(config, val_samples(recipe, 16))]
    target = model_dir / str(opts.version) / "model.int8.onnx"
    quantize_int8(onnx_path, calibration, target, options=Int8Options(float_tail=True))
    int8_map, _ = val_map(
        open_model(config, target, CPU), val_samples(recipe, opts.val_limit), recipe
    )
    return {
        "file": f"{opts.version}/model.int8.onnx",
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
    model_dir: Path, config: ModelConfig, recipe: Recipe, opts: ExportOptions
) -> bool:
    """`vision.tensorrt.tensorrt_gate` with the detector's val mAP; False when it fails."""
    from vision.tensorrt import tensorrt_gate

    samples = val_samples(recipe, opts.val_limit)
    batches = parity_batches(preprocessed(config, samples), opts.parity_images)[:2]
    entry = tensorrt_gate(
        config,
        model_dir / str(opts.version),
        batches,
        lambda model: {"val_map": round(val_map(model, samples, recipe)[0], 4)},
        METRIC_TOLERANCE,
    )
    print(json.dumps({"tensorrt": entry}, indent=1))
    return bool(entry["passed"])


def export_detector(opts: ExportOptions) -> int:
    """Export, gate, write the repository entry; 1 when a gate fails (nothing written when the
    ONNX gate does), 0 otherwise."""
    from vision.export import export_onnx, read_card, write_card, write_repository_entry

    torch.set_num_threads(1)
    model, recipe, labels, state = load_checkpoint(opts.checkpoint)
    if opts.recipe and opts.recipe in RECIPES and opts.recipe != recipe.name:
        raise ConfigError(
            f"checkpoint was trained with recipe {recipe.name!r}, not {opts.recipe!r}"
        )
    name = opts.name or recipe.name
    model.export_mode = True
    samples = val_samples(recipe, opts.val_limit)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        example = torch.zeros(1, recipe.channels, recipe.height, recipe.width)
        export_onnx(model, example, onnx_path, (INPUT_NAME,), (OUTPUT_NAME,), opset=18)
        gate = parity_gate(
            model, onnx_path, model_config(recipe, labels, name), recipe, samples, opts
        )
        print(json.dumps(gate, indent=1))
        if not gate["passed"]:
            print("parity gate FAILED: nothing written to the repository")
            return 1
        repo = Path(opts.repo or default_repository())
        config = model_config(recipe, labels, name, gate["val_best_f"].get("score_threshold"))
        config = _keep_explain(config, repo / name)
        card = _card(recipe, state, gate, name)
        model_dir = write_repository_entry(repo, config, onnx_path, card, version=opts.version)
        if opts.int8:
            card = read_card(model_dir)
            card["int8"] = write_int8(model_dir, config, onnx_path, recipe, opts)
            write_card(model_dir, card)
        if opts.tensorrt and not _tensorrt_gate(model_dir, config, recipe, opts):
            return 1
    _copy_run_files(opts.checkpoint.parent, model_dir)
    print(f"exported {name} v{opts.version} to {model_dir}")
    return 0


def _copy_run_files(run_dir: Path, model_dir: Path) -> None:
    for extra in ("curve.png", "log.json"):
        if (run_dir / extra).is_file():
            shutil.copyfile(run_dir / extra, model_dir / f"training_{extra}")
