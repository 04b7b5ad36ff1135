"""`vision explain` (torch-free heat maps for image files) and `vision explain-export`.

`explain` runs in-process with ONNX Runtime only: decode (PNG/JPEG/TIFF/BMP/DICOM), preprocess,
run the plain model (detection) and the explain graph, then write one heat-map overlay PNG per
finding and `explain.json`, a summary of every finding and its file.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vision.config import EXPLAIN_METHODS, ModelConfig
from vision.errors import VisionError
from vision.io import decode_image
from vision.loader import LoadedModel, load_model
from vision.paths import default_repository
from vision.render import color_for, encode_png_rgb, heatmap_overlay
from vision.types import DetectionResult, Image
from vision.xai.explainer import Explainer, Explanation

log = logging.getLogger(__name__)
SUMMARY_FILE = "explain.json"


def _classes(text: str) -> list[int]:
    """'1,2' -> [1, 2]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--classes takes integers like 1,2: {exc}") from exc


class _Models:
    """The plain model and the explain graph of one model version (`vision.loader`)."""

    def __init__(self, repo: Path, name: str, version: int | None) -> None:
        self.loaded: LoadedModel = load_model(repo / name, version, explain=True)
        self.config: ModelConfig = self.loaded.config
        self.pipeline = self.loaded.pipeline
        assert self.loaded.explainer is not None
        self.explainer: Explainer = self.loaded.explainer
        # Segmentation: the explain graph yields masks and heat maps; no plain run needed.
        self.plain = self.loaded.session if self.config.task == "detection" else None

    def explain(self, image: Image, classes: list[int]) -> list[Explanation]:
        """Heat maps of one decoded image (detections: filtered to `classes` when given)."""
        tensor, meta = self.pipeline.preprocess(image)
        if self.plain is None:
            _, found = self.explainer.explain_segmentation(tensor, meta, classes)
            return found
        outputs = self.plain.run({self.config.input.name: tensor[np.newaxis]})
        result = self.pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
        assert isinstance(result, DetectionResult)
        if classes:
            result = DetectionResult([d for d in result.detections if d.class_id in classes])
        return self.explainer.explain_detections(tensor, meta, result)


def _overlay(image: Image, found: Explanation) -> np.ndarray:
    """Heat map over the image; the box and its label for a detection."""
    rgb = np.ascontiguousarray(heatmap_overlay(image, found.heat))
    d = found.detection
    if d is not None:
        colour = color_for(d.class_id)
        width = max(1, round(min(rgb.shape[:2]) / 300))
        p1, p2 = (round(d.x1), round(d.y1)), (round(d.x2), round(d.y2))
        cv2.rectangle(rgb, p1, p2, colour, width)
        text = f"{d.label} {d.score:.2f}"
        cv2.putText(rgb, text, (p1[0], max(12, p1[1] - 3)), 0, 0.4, colour, 1, cv2.LINE_AA)
    return rgb


def _entry(found: Explanation, png: Path) -> dict[str, Any]:
    """One finding of the JSON summary (peak in original-image pixels, x then y)."""
    y, x = np.unravel_index(int(np.argmax(found.heat)), found.heat.shape)
    entry: dict[str, Any] = {
        "class_id": found.class_id,
        "label": found.label,
        "png": str(png),
        "peak_xy": [int(x), int(y)],
        "heat_mean": round(float(found.heat.mean()), 4),
    }
    d = found.detection
    if d is not None:
        entry["box_xyxy"] = [round(v, 1) for v in (d.x1, d.y1, d.x2, d.y2)]
        entry["score"] = round(d.score, 4)
    return entry


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def explain_files(
    paths: list[Path], models: _Models, out: Path, classes: list[int]
) -> list[dict[str, Any]]:
    """Write the overlay PNGs of each image under `out`; the summary's per-image entries."""
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for path in paths:
        image = decode_image(path.read_bytes(), dicom_window=models.config.preprocess.dicom_window)
        findings = []
        for i, found in enumerate(models.explain(image, classes)):
            png = out / f"{_safe(path.stem)}_{i:02d}_{_safe(found.label)}.png"
            png.write_bytes(encode_png_rgb(_overlay(image, found)))
            findings.append(_entry(found, png))
        summary.append(
            {"image": str(path), "size_hw": [image.height, image.width], "findings": findings}
        )
        log.info("%s: %d heat maps", path, len(findings))
    return summary


def explain(argv: list[str] | None = None) -> int:
    """`vision explain IMAGE [IMAGE...] --model NAME [--repo DIR] [--out DIR] [--classes 1,2]`."""
    parser = argparse.ArgumentParser(
        prog="vision explain", description="Grad-CAM heat maps of image files (torch-free)."
    )
    parser.add_argument("images", nargs="+", type=Path, help="PNG, JPEG, TIFF, BMP or DICOM")
    parser.add_argument("--model", required=True, help="model name in the repository")
    parser.add_argument("--repo", type=Path, default=None, help="default: the bundled models/")
    parser.add_argument("--version", type=int, default=None, help="default: the latest")
    parser.add_argument("--out", type=Path, default=Path("explain-out"))
    parser.add_argument(
        "--classes", type=_classes, default=[], help="class ids, e.g. 1,2 (default: all found)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        models = _Models(args.repo or default_repository(), args.model, args.version)
        summary = explain_files(args.images, models, args.out, args.classes)
    except (VisionError, OSError) as exc:
        print(f"vision explain: {exc}", file=sys.stderr)
        return 2
    report = {
        "model": args.model,
        "method": models.config.explain.method,
        "target_layer": models.config.explain.target_layer,
        "images": summary,
    }
    (args.out / SUMMARY_FILE).write_text(json.dumps(report, indent=2) + "\n")
    total = sum(len(s["findings"]) for s in summary)
    print(f"{total} heat maps for {len(summary)} image(s) in {args.out}")
    return 0


def explain_export(argv: list[str] | None = None) -> int:
    """`vision explain-export --model NAME (--checkpoint PATH | --image PATH) [--repo DIR] ...`."""
    parser = argparse.ArgumentParser(
        prog="vision explain-export",
        description="Add a Grad-CAM explain graph (model.explain.onnx) to a repository model.",
    )
    parser.add_argument("--model", required=True)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="e.g. runs/<recipe>/best.pt")
    weights.add_argument(
        "--image",
        type=Path,
        help="instead of a checkpoint: the model's shipped weights.safetensors, with this "
        "(validation) image as the export's example",
    )
    parser.add_argument("--repo", type=Path, default=None, help="default: the bundled models/")
    parser.add_argument("--version", type=int, default=None, help="default: the latest")
    parser.add_argument("--method", default="gradcam", choices=EXPLAIN_METHODS)
    parser.add_argument("--target-layer", default=None, help="default: the architecture's")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from vision.xai.export import add_explain_graph

    torch.set_num_threads(args.threads)
    try:
        entry = add_explain_graph(
            args.repo or default_repository(),
            args.model,
            args.checkpoint,
            args.version,
            args.method,
            args.target_layer,
            image=args.image,
        )
    except (VisionError, OSError) as exc:
        print(f"vision explain-export: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the explain graph failed its parity check: nothing written
        print(f"vision explain-export: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: entry[k] for k in ("file", "target_layer", "bytes", "parity")}, indent=2))
    return 0


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vision xai-eval",
        description="Quality of a model's Grad-CAM explanations on its test split: deletion / "
        "insertion AUC vs random maps, pointing game and IoU against the truth, and the "
        "model-randomisation check (needs the torch checkpoint).",
    )
    p.add_argument("--model", required=True, help="a reference model in the repository")
    p.add_argument("--repo", type=Path, default=None, help="default: the bundled models/")
    p.add_argument("--version", type=int, default=0, help="default: the latest")
    p.add_argument("--out", type=Path, default=None, help="default: reports/<model>/xai")
    p.add_argument("--limit", type=int, default=8, help="test images (spread over the split)")
    p.add_argument("--targets", type=int, default=1, help="findings explained per image")
    p.add_argument("--steps", type=int, default=20, help="deletion / insertion steps")
    p.add_argument("--seeds", type=int, default=3, help="random maps per target")
    p.add_argument("--tolerance", type=int, default=15, help="pointing game tolerance (px)")
    p.add_argument("--threshold", type=float, default=0.5, help="heat threshold for the IoU")
    p.add_argument("--rand-steps", type=int, default=12, help="randomisation steps (0: all)")
    p.add_argument("--rand-images", type=int, default=4, help="targets in the randomisation")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: runs/<model>/best.pt")
    p.add_argument("--no-randomisation", action="store_true", help="skip the torch check")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split",
        default="test",
        choices=("val", "test"),
        help="val: to choose between settings (e.g. --target-layer candidates); test: the "
        "final figures for the card",
    )
    p.add_argument(
        "--update-card",
        action="store_true",
        help="write the figures into the card's evaluation.xai (and the randomisation "
        "limitation when the check fails); default: the report only",
    )
    return p


def xai_eval(argv: list[str] | None = None) -> int:
    """`vision xai-eval --model NAME [--limit 8] ...`: JSON report and PNG plots."""
    parser = _eval_parser()
    args = parser.parse_args(argv)
    if args.update_card and args.split != "test":
        parser.error("--update-card records test figures only; drop it or use --split test")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from vision.xai.evaluate import REPORT_FILE, Options, evaluate_model

    opts = Options(
        limit=args.limit,
        targets=args.targets,
        steps=args.steps,
        seeds=args.seeds,
        tolerance=args.tolerance,
        threshold=args.threshold,
        rand_steps=args.rand_steps,
        rand_images=args.rand_images,
        checkpoint=args.checkpoint,
        randomisation=not args.no_randomisation,
        threads=args.threads,
        seed=args.seed,
        split=args.split,
    )
    out = args.out or Path("reports") / args.model / "xai"
    try:
        report = evaluate_model(
            args.repo or default_repository(), args.model, out, opts, args.version
        )
    except (VisionError, OSError, KeyError) as exc:
        print(f"vision xai-eval: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(headline(report), indent=2))
    print(f"report: {out / REPORT_FILE}")
    if args.update_card:
        from vision.xai.eval_card import update_card

        repo = args.repo or default_repository()
        command = "vision xai-eval " + " ".join(a for a in (argv or sys.argv[1:]) if a)
        update_card(repo / args.model, report, command)
        print(f"card: {repo / args.model / 'card.json'} (evaluation.xai)")
    return 0


def headline(report: dict) -> dict[str, Any]:
    """The figures worth printing: AUCs, pointing, IoU, randomisation."""
    rand = report["randomisation"]
    return {
        "model": report["model"],
        "targets": report["targets"],
        **{
            f"{k}_auc": {w: round(float(report[k][f"{w}_auc"]), 4) for w in ("gradcam", "random")}
            for k in ("deletion", "insertion")
        },
        "pointing": {k: report["pointing"][k] for k in ("gradcam_hit_rate", "random_hit_rate")},
        "iou": {k: v for k, v in report["iou"].items() if k.endswith(("threshold", "area"))},
        "randomisation": rand.get("skipped")
        or {
            "verdict": rand["verdict"],
            "steps": [
                {
                    k: s.get(k)
                    for k in (
                        "down_to",
                        "spearman_mean",
                        "abs_spearman_mean",
                        "box_abs_spearman_mean",
                    )
                    if k in s
                }
                for s in rand["steps"]
            ],
        },
    }
