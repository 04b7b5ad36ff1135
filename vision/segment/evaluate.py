"""Evaluation through the serving path (Pipeline + OnnxModel) and the export gate."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from vision.config import ModelConfig, RuntimeSpec, load_config
from vision.export import read_card, write_card
from vision.io import decode_image
from vision.reports import plot_roc, save_overlay, write_json
from vision.runtime import OnnxModel
from vision.segment import data as segdata
from vision.segment.metrics import defect_metrics, vessel_metrics, vessel_roc
from vision.segment.model import Recipe
from vision.types import Image

log = logging.getLogger(__name__)
GATE_KEYS = ("dice", "auroc")


def make_pipeline(config: ModelConfig) -> Any:
    """The serving pipeline for a config (the same code path as the server)."""
    from vision.pipeline import Pipeline

    return Pipeline(config)


def load_samples(recipe: Recipe, root: Path, split: str, split_file: Path, limit: int = 0) -> list:
    """Samples of one split: DRIVE train/val/test (val carved from training), tile from JSON."""
    if recipe.dataset == "drive":
        val = list(recipe.extra["val_images"])
        if split == "test":
            samples = segdata.load_drive(root, "test")
        else:
            samples = [
                s
                for s in segdata.load_drive(root, "training")
                if (s.name in val) == (split == "val")
            ]
    else:
        splits = segdata.tile_split(root, split_file, seed=recipe.extra.get("split_seed", 0))
        samples = segdata.load_tile(root, splits[split])
    if limit:
        samples = _spread(samples, limit)
    return samples


def _spread(samples: list, limit: int) -> list:
    """At most `limit` samples, spread over the list (keeps tile categories mixed)."""
    idx = np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(int)
    return [samples[i] for i in sorted(set(idx))]


def _decoded(sample: segdata.Sample) -> Image:
    """The image as the server sees it: its file decoded by vision.io (raw pixels otherwise)."""
    if sample.path:
        return decode_image(Path(sample.path).read_bytes())
    return Image(pixels=sample.image)


def _inputs(pipeline: Any, samples: list) -> tuple[list[np.ndarray], list]:
    pairs = [pipeline.preprocess(_decoded(s)) for s in samples]
    return [np.asarray(t, np.float32) for t, _ in pairs], [m for _, m in pairs]


def _batched(tensors: list[np.ndarray], size: int) -> list[np.ndarray]:
    return [np.stack(tensors[i : i + size]) for i in range(0, len(tensors), size)]


def onnx_probs(
    onnx_path: Path, config: ModelConfig, samples: list, batch: int = 8
) -> list[np.ndarray]:
    """Per-image (C,H,W) probabilities at original size via Pipeline + OnnxModel."""
    pipeline = make_pipeline(config)
    model = OnnxModel(onnx_path, config.runtime)
    tensors, metas = _inputs(pipeline, samples)
    outputs = []
    for chunk in _batched(tensors, batch):
        result = model.run({model.inputs[0].name: chunk})
        outputs += [{k: v[i] for k, v in result.items()} for i in range(len(chunk))]
    return [pipeline.segmentation_probabilities(o, m) for o, m in zip(outputs, metas, strict=True)]


def torch_probs(model: Any, config: ModelConfig, samples: list, batch: int = 4) -> list[np.ndarray]:
    """The same as `onnx_probs`, with the torch model in place of ONNX Runtime."""
    import torch

    pipeline = make_pipeline(config)
    tensors, metas = _inputs(pipeline, samples)
    name = config.postprocess.output or "logits"
    outputs = []
    model.eval()
    with torch.no_grad():
        for chunk in _batched(tensors, batch):
            logits = model(torch.from_numpy(chunk)).numpy()
            outputs += [{name: x} for x in logits]
    return [pipeline.segmentation_probabilities(o, m) for o, m in zip(outputs, metas, strict=True)]


def compute_metrics(recipe: Recipe, probs: list[np.ndarray], samples: list) -> dict:
    """Recipe metrics at original image size."""
    masks = [s.mask for s in samples]
    if recipe.dataset == "drive":
        return vessel_metrics(probs, masks, [s.fov for s in samples])
    return defect_metrics(probs, masks, recipe.labels)


def gate(reference: dict, candidate: dict, tolerance_points: float) -> dict:
    """Per-key absolute differences (in points) and whether all are within tolerance."""
    diffs = {k: 100 * abs(float(reference[k]) - float(candidate[k])) for k in GATE_KEYS}
    return {
        "diff_points": diffs,
        "tolerance_points": tolerance_points,
        "passed": all(d <= tolerance_points for d in diffs.values()),
    }


def time_model(onnx_path: Path, example: np.ndarray, repeats: int = 10) -> float:
    """Median single-thread latency (ms) of one batch through ONNX Runtime on CPU."""
    model = OnnxModel(onnx_path, RuntimeSpec(providers=("cpu",), intra_op_threads=1))
    feeds = {model.inputs[0].name: example}
    model.run(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(feeds)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def _version_dir(model_dir: Path, version: int) -> Path:
    if version:
        return model_dir / str(version)
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"no versions under {model_dir}")
    return model_dir / str(versions[-1])


def write_plots(recipe: Recipe, probs: list, samples: list, metrics: dict, out: Path) -> list[str]:
    """ROC curve (retina) and up to four overlays (image | truth | prediction)."""
    files = []
    if recipe.dataset == "drive":
        fpr, tpr = vessel_roc(probs, [s.mask for s in samples], [s.fov for s in samples])
        files.append(plot_roc(fpr, tpr, metrics["auroc"], out / "roc.png", recipe.name).name)
    picks = [i for i, s in enumerate(samples) if s.mask.any()][:3]
    picks += [i for i, s in enumerate(samples) if not s.mask.any()][:1]
    for i in picks:
        s = samples[i]
        name = f"overlay_{Path(s.name).stem}.png"
        save_overlay(s.image, s.mask, probs[i].argmax(0), out / name, f"{s.category} {s.name}")
        files.append(name)
    return files


def evaluate_model(
    recipe: Recipe,
    repo: Path,
    root: Path,
    split: str,
    out: Path,
    version: int = 0,
    limit: int = 0,
    update_card: bool = True,
    name: str = "",
) -> dict:
    """Evaluate a repository model through ONNX on a split; JSON + PNGs; update the card."""
    model_dir = Path(repo) / (name or recipe.name)
    config = load_config(model_dir)
    onnx_path = _version_dir(model_dir, version) / config.model_file
    samples = load_samples(recipe, root, split, model_dir / "splits.json", limit)
    start = time.perf_counter()
    probs = onnx_probs(onnx_path, config, samples)
    seconds = time.perf_counter() - start
    metrics = compute_metrics(recipe, probs, samples)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": config.name,
        "onnx": str(onnx_path),
        "split": split,
        "images": len(samples),
        "limit": limit,
        "pipeline": type(make_pipeline(config)).__module__,
        "seconds": round(seconds, 2),
        "metrics": metrics,
    }
    report["plots"] = write_plots(recipe, probs, samples, metrics, out)
    write_json(report, out / "report.json")
    if update_card and not limit:
        card = read_card(model_dir)
        card.setdefault("metrics", {})[split] = metrics
        write_card(model_dir, card)
    return report


def _load_checkpoint(checkpoint: Path) -> tuple[Any, Recipe, dict]:
    """Model, the recipe it was trained with (from the checkpoint) and the checkpoint."""
    import torch

    from vision.segment.model import build_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    recipe = Recipe(**state["recipe"])
    model = build_model(recipe)
    model.load_state_dict(state["model"])
    return model.eval(), recipe, state


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
) -> int:
    """Checkpoint -> ONNX -> parity gates -> repository entry (and INT8 twin); exit code."""
    import torch

    from vision.export import export_onnx, parity_check, write_repository_entry
    from vision.segment.model import model_config

    model, trained, state = _load_checkpoint(checkpoint)
    if trained.name != recipe.name:
        raise SystemExit(f"{checkpoint} was trained for {trained.name!r}, not {recipe.name!r}")
    recipe = trained
    config = model_config(recipe)
    run = checkpoint.parent
    work = run / "export"
    example = torch.zeros(1, recipe.in_channels, recipe.height, recipe.width)
    onnx_path = export_onnx(model, example, work / "model.onnx", ["images"], ["logits"], opset=17)
    split_file = run / "splits.json"
    val = load_samples(recipe, root, "val", split_file, limit)
    tensors, _ = _inputs(make_pipeline(config), val)
    parity = parity_check(model, onnx_path, _real_batches(tensors))
    val_torch = compute_metrics(recipe, torch_probs(model, config, val), val)
    val_onnx = compute_metrics(recipe, onnx_probs(onnx_path, config, val), val)
    metric_gate = gate(val_torch, val_onnx, tolerance)
    parity |= {"max_abs_diff_limit": 1e-3, "metric_gate_val": metric_gate}
    log.info("parity: %s", parity)
    if not metric_gate["passed"] or max(parity["max_abs_diff"].values()) > 1e-3:
        log.error("parity gate failed; nothing written to %s", repo)
        return 1
    test = load_samples(recipe, root, "test", split_file, limit)
    test_onnx = compute_metrics(recipe, onnx_probs(onnx_path, config, test), test)
    card = build_card(
        recipe,
        state,
        run,
        parity,
        {"val": val_onnx, "test": test_onnx},
        {"val_torch": val_torch},
        limit,
    )
    model_dir = write_repository_entry(repo, config, onnx_path, card, version)
    card["files"] = _copy_run_files(run, model_dir)
    write_card(model_dir, {**read_card(model_dir), "files": card["files"]})
    log.info("wrote %s: test %s", model_dir, {k: test_onnx[k] for k in GATE_KEYS})
    if int8:
        export_int8(
            recipe,
            config,
            onnx_path,
            repo,
            root,
            split_file,
            {"val": val_onnx, "test": test_onnx},
            limit,
        )
    return 0


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
            "output": "logits (N,classes,H,W)",
            "parity": parity,
        },
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
    import dataclasses

    from vision.export import quantize_int8, write_repository_entry

    pipeline = make_pipeline(config)
    calib, _ = _inputs(pipeline, _spread(load_samples(recipe, root, "train", split_file), 16))
    int8_path = quantize_int8(onnx_path, [t[None] for t in calib], onnx_path.with_name("int8.onnx"))
    result = {}
    for split in ("val", "test"):
        samples = load_samples(recipe, root, split, split_file, limit)
        result[split] = compute_metrics(recipe, onnx_probs(int8_path, config, samples), samples)
    drops = {k: 100 * (float(fp32["val"][k]) - float(result["val"][k])) for k in GATE_KEYS}
    fp32_ms, int8_ms = time_model(onnx_path, calib[0][None]), time_model(int8_path, calib[0][None])
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
