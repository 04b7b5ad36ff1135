"""Segmentation export: checkpoint -> ONNX -> parity gates -> repository entry (+ INT8 twin)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vision.config import ModelConfig
from vision.errors import ConfigError
from vision.export import read_card, write_card
from vision.segment.evaluate import (
    GATE_KEYS,
    compute_metrics,
    gate,
    load_samples,
    make_pipeline,
    model_inputs,
    onnx_predict,
    predict,
    spread,
    time_model,
    torch_predict,
)
from vision.segment.model import Recipe

log = logging.getLogger(__name__)


def _load_checkpoint(checkpoint: Path) -> tuple[Any, Recipe, dict]:
    """The model as served (eval mode; with the image-level head when the recipe has one), the
    recipe it was trained with (from the checkpoint) and the checkpoint."""
    import torch

    from vision.segment.image_head import with_image_score
    from vision.segment.model import build_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    recipe = Recipe(**state["recipe"])
    model = build_model(recipe)
    model.load_state_dict(state["model"])
    if "image_head" not in recipe.extra:
        return model.eval(), recipe, state
    if "image_head" not in state:
        raise ConfigError(
            f"{checkpoint}: the recipe has an image_head, the checkpoint none; "
            "`vision train --resume` fits it"
        )
    return with_image_score(model, state["image_head"]), recipe, state


def output_names(recipe: Recipe) -> list[str]:
    """The served graph's outputs: logits, then the image score when the recipe has a head."""
    from vision.segment.image_head import SCORE_OUTPUT

    return ["logits", SCORE_OUTPUT] if "image_head" in recipe.extra else ["logits"]


def _real_batches(tensors: list[np.ndarray]) -> list[np.ndarray]:
    """Parity batches of real images: one of size 1 and one of up to 4."""
    return [np.stack(tensors[:1]), np.stack(tensors[1:5] or tensors[:1])]


def _training_summary(run: Path, state: dict) -> dict:
    last = run / "last.pt"
    summary = {"best_epoch": state.get("epoch"), "best_val_at_input_size": state.get("val")}
    if last.is_file():
        import torch

        info = torch.load(last, map_location="cpu", weights_only=False)
        summary |= {"epochs": info["epoch"], "train_seconds": round(info["elapsed"], 1)}
    return summary


def _copy_run_files(run: Path, model_dir: Path) -> list[str]:
    copied = []
    for src, dst in (
        ("curves.png", "training_curves.png"),
        ("history.json", "training_log.json"),
        ("splits.json", "splits.json"),
    ):
        if (run / src).is_file():
            (model_dir / dst).write_bytes((run / src).read_bytes())
            copied.append(dst)
    return copied


def export_recipe(
    recipe: Recipe,
    checkpoint: Path,
    repo: Path,
    root: Path,
    int8: bool = False,
    version: int = 1,
    tolerance: float = 0.5,
    limit: int = 0,
    tensorrt: bool = False,
) -> int:
    """Checkpoint -> ONNX -> parity gates -> repository entry (and INT8 twin); exit code."""
    import torch

    from vision.export import export_onnx, parity_check, write_repository_entry
    from vision.segment.model import model_config

    model, trained, state = _load_checkpoint(checkpoint)
    if trained.name != recipe.name:
        raise ConfigError(f"{checkpoint} was trained for {trained.name!r}, not {recipe.name!r}")
    recipe = trained
    config = model_config(recipe)
    run = checkpoint.parent
    work = run / "export"
    example = torch.zeros(1, recipe.in_channels, recipe.height, recipe.width)
    outputs = output_names(recipe)
    onnx_path = export_onnx(model, example, work / "model.onnx", ["images"], outputs, opset=17)
    split_file = run / "splits.json"
    val = load_samples(recipe, root, "val", split_file, limit)
    tensors, _ = model_inputs(make_pipeline(config), val)
    parity = parity_check(model, onnx_path, _real_batches(tensors))
    val_torch = compute_metrics(recipe, torch_predict(model, config, val), val)
    val_onnx = compute_metrics(recipe, onnx_predict(onnx_path, config, val), val)
    metric_gate = gate(val_torch, val_onnx, tolerance)
    parity |= {"max_abs_diff_limit": 1e-3, "metric_gate_val": metric_gate}
    log.info("parity: %s", parity)
    if not metric_gate["passed"] or max(parity["max_abs_diff"].values()) > 1e-3:
        log.error("parity gate failed; nothing written to %s", repo)
        return 1
    # the test split is never scored here: `vision eval --split test --update-card` is the
    # protocol's last step, once the checkpoint, gate and head are chosen on val
    card = build_card(
        recipe, state, run, parity, {"val": val_onnx}, {"val_torch": val_torch}, limit
    )
    model_dir = write_repository_entry(repo, config, onnx_path, card, version)
    card["files"] = _copy_run_files(run, model_dir)
    write_card(model_dir, {**read_card(model_dir), "files": card["files"]})
    log.info("wrote %s: val %s", model_dir, {k: val_onnx.get(k) for k in GATE_KEYS})
    batches, version_dir = _real_batches(tensors), model_dir / str(version)
    if not ship_weights(checkpoint, model, model_dir, version, config.model_file, batches):
        return 1
    trt_ok = not tensorrt or _tensorrt_gate(
        recipe, config, version_dir, batches, val, val_onnx, tolerance
    )
    if int8:
        export_int8(
            recipe,
            config,
            onnx_path,
            repo,
            root,
            split_file,
            {"val": val_onnx},
            limit,
        )
    return 0 if trt_ok else 1


def ship_weights(
    checkpoint: Path, model: Any, model_dir: Path, version: int, model_file: str, batches: list
) -> bool:
    """Write the served network's weights beside its ONNX file (`<version>/weights.safetensors`:
    what `vision train --init` fine-tunes and the eager checks load), reload them into a fresh
    network of `checkpoint`'s recipe and record in the card how far it is from the ONNX file;
    False (the card's weights entry then says so) when it is further than 1e-3."""
    import torch

    from vision.export import parity_check
    from vision.weights_file import WEIGHTS_FILE, load_weights, save_weights

    path = model_dir / str(version) / WEIGHTS_FILE
    entry = save_weights(model, path, {"format": "pt"})
    fresh = _load_checkpoint(checkpoint)[0]
    with torch.no_grad():  # the saved tensors, not the checkpoint's, are what is compared
        for tensor in fresh.state_dict().values():
            tensor.zero_()
    parity = parity_check(load_weights(fresh, path), model_dir / str(version) / model_file, batches)
    parity["images"] = sum(len(batch) for batch in batches)
    parity["passed"] = max(parity["max_abs_diff"].values()) <= 1e-3
    card = read_card(model_dir)
    card["weights"] = {
        **entry,
        "file": f"{version}/{WEIGHTS_FILE}",
        "format": "safetensors, float32, torch state_dict of the recipe's network as served",
        "provenance": "the exported checkpoint's state dict, saved at export",
        "parity": parity,
    }
    write_card(model_dir, card)
    if not parity["passed"]:
        log.error("shipped weights differ from %s: %s", model_file, parity["max_abs_diff"])
    return bool(parity["passed"])


def _tensorrt_gate(
    recipe: Recipe,
    config: ModelConfig,
    version_dir: Path,
    batches: list[np.ndarray],
    val: list,
    val_onnx: dict,
    tolerance: float,
) -> bool:
    """`vision.tensorrt.tensorrt_gate` with the recipe's val metrics (GATE_KEYS, `tolerance` in
    points); False when it fails."""
    from vision.tensorrt import tensorrt_gate

    def metrics(model: Any) -> dict[str, float]:
        found = compute_metrics(recipe, predict(model, val), val)
        return {k: float(found[k]) for k in GATE_KEYS}

    reference = {k: float(val_onnx[k]) for k in GATE_KEYS}
    entry = tensorrt_gate(config, version_dir, batches, metrics, tolerance / 100, reference)
    return bool(entry["passed"])


def build_card(
    recipe: Recipe, state: dict, run: Path, parity: dict, metrics: dict, reference: dict, limit: int
) -> dict:
    """The model card's content (written as card.json and MODEL_CARD.md)."""
    data = {
        "drive": {
            "dataset": "DRIVE (orobix/retina-unet redistribution), research use",
            "train": "DRIVE training minus val images",
            "val": recipe.extra.get("val_images"),
            "test": "DRIVE test (20 images), metrics inside the FOV mask, 1st_manual labels",
        },
        "magnetic-tile": {
            "dataset": "Magnetic Tile Defect (abin24), cite the authors",
            "split": "stratified by category, seed 0, 70/15/15; see splits.json",
        },
    }.get(recipe.dataset, {"dataset": recipe.dataset})
    head = {k: v for k, v in state.get("image_head", {}).items() if k != "weight"}
    output = "logits (N,classes,H,W)"
    if head:
        output += ", defect_score (N,): image-level defect probability from image_head"
    return {
        "name": recipe.name,
        "description": recipe.description,
        "task": "segmentation",
        "labels": list(recipe.labels),
        "data": data,
        "recipe": recipe.to_dict(),
        "training": _training_summary(run, state),
        "export": {
            "opset": 17,
            "dynamic_batch": True,
            "input": "images (N,C,H,W) float32",
            "output": output,
            "parity": parity,
        },
        **({"image_head": head} if head else {}),
        "metrics": metrics,
        "reference_torch": reference,
        "evaluation": "ONNX through vision.pipeline.Pipeline + vision.runtime.OnnxModel at "
        "original image size" + (f" (limited to {limit} images per split)" if limit else ""),
        "limitations": ["Trained from scratch on CPU in under 40 minutes; research use only."],
    }


def export_int8(
    recipe: Recipe,
    config: ModelConfig,
    onnx_path: Path,
    repo: Path,
    root: Path,
    split_file: Path,
    fp32: dict,
    limit: int = 0,
    max_drop_points: float = 1.0,
) -> bool:
    """Static QDQ INT8 twin `<name>-int8`, kept only if no gate metric drops > 1 point on val."""
    from vision.export import write_repository_entry
    from vision.quantize import quantize_int8

    pipeline = make_pipeline(config)
    calib, _ = model_inputs(pipeline, spread(load_samples(recipe, root, "train", split_file), 16))
    int8_path = quantize_int8(onnx_path, [t[None] for t in calib], onnx_path.with_name("int8.onnx"))
    result = {}
    samples = load_samples(recipe, root, "val", split_file, limit)  # test: `vision eval` only
    result["val"] = compute_metrics(recipe, onnx_predict(int8_path, config, samples), samples)
    drops = {k: 100 * (float(fp32["val"][k]) - float(result["val"][k])) for k in GATE_KEYS}
    example = calib[0][None]
    fp32_ms = time_model(config, onnx_path, example)
    int8_ms = time_model(config, int8_path, example)
    summary = {
        "kept": all(d <= max_drop_points for d in drops.values()),
        "drop_points_val": drops,
        "max_drop_points": max_drop_points,
        "latency_ms_fp32": fp32_ms,
        "latency_ms_int8": int8_ms,
        "speedup": fp32_ms / int8_ms,
        "timing": "CPU EP, 1 thread, batch 1, median of 10",
        "calibration": f"{len(calib)} training images, MinMax, QDQ, per-channel int8 weights",
        "metrics_int8": result,
        "folder": f"{config.name}-int8",
    }
    log.info("int8: %s", {k: v for k, v in summary.items() if k != "metrics_int8"})
    model_dir = Path(repo) / config.name
    write_card(model_dir, {**read_card(model_dir), "int8": summary})
    if summary["kept"]:
        twin = dataclasses.replace(
            config,
            name=f"{config.name}-int8",
            description=f"{config.description} INT8 (static QDQ).",
        )
        card = {
            "description": twin.description,
            "int8_of": config.name,
            "int8": summary,
            "metrics": result,
            "data": read_card(model_dir).get("data", {}),
        }
        twin_dir = write_repository_entry(repo, twin, int8_path, card, 1)
        if split_file.is_file():
            (twin_dir / "splits.json").write_bytes(split_file.read_bytes())
    return bool(summary["kept"])
