"""`vision train|export|eval` for detection; also `python -m vision.detect.cli train ...`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

AfterExport = Callable[[Path, str, int, Path], int]


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision train", description="Train a detector (CPU is fine).")
    p.add_argument("--task", default="detection")
    p.add_argument("--recipe", help="pcb-defects | blood-cells")
    p.add_argument("--format", choices=["voc", "coco", "yolo", "deeppcb"])
    p.add_argument("--data", help="dataset folder (generic training)")
    p.add_argument("--name", help="model name (generic training)")
    p.add_argument("--train-split", help="default train (trainval for DeepPCB)")
    p.add_argument("--val-split", help="default val; '' holds 10%% of the training split out")
    p.add_argument(
        "--epochs", type=int, help="epoch budget; training stops at --epochs or --minutes, first"
    )
    p.add_argument(
        "--minutes",
        type=float,
        help="wall-clock budget (0: none); the learning-rate schedule follows whichever budget "
        "is nearer its end",
    )
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--size", type=int, help="square input size")
    p.add_argument("--channels", type=int, choices=[1, 3])
    p.add_argument("--out", type=Path, help="run folder (default runs/<recipe>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, help="use only this many training images (smoke tests)")
    p.add_argument("--synthetic", type=Path, help="`vision synth` folder: extra training images")
    p.add_argument("--synthetic-ratio", type=float, default=0.25, help="synthetic share per batch")
    return p


def train(argv: list[str]) -> int:
    """Train; writes best.pt, last.pt, log.json and curve.png into the run folder."""
    args = _train_parser().parse_args(argv)
    from vision.detect.recipes import resolve_recipe
    from vision.detect.train import Trainer

    recipe = resolve_recipe(
        args.recipe,
        args.format,
        args.data,
        args.name,
        args.size,
        epochs=args.epochs,
        minutes=args.minutes,
        batch=args.batch,
        lr=args.lr,
        channels=args.channels,
        train_split=args.train_split,
        val_split=args.val_split,
    )
    out = args.out or Path("runs") / recipe.name
    trainer = Trainer(
        recipe,
        out,
        seed=args.seed,
        threads=args.threads,
        limit=args.limit,
        synthetic=args.synthetic,
        ratio=args.synthetic_ratio,
    )
    if args.resume and (out / "last.pt").is_file():
        trainer.resume(out / "last.pt")
        print(f"resumed from {out / 'last.pt'} at epoch {trainer.state['epoch']}", flush=True)
    start = time.monotonic()
    state = trainer.fit()
    print(
        f"done: {state['epoch']} epochs, {state['step']} steps, best val mAP "
        f"{state['best']:.4f}, {time.monotonic() - start:.0f} s this session; run folder {out}"
    )
    return 0


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision export", description="Export a detector to ONNX.")
    p.add_argument("--task", default="detection")
    p.add_argument("--recipe")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--repo", type=Path, help="model repository (default: models/)")
    p.add_argument("--name", help="model name (default: the recipe's)")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--int8", action="store_true", help="also write an int8-quantised model")
    p.add_argument("--tensorrt", action="store_true", help="also build + check a TensorRT engine")
    p.add_argument("--parity-images", type=int, default=8)
    p.add_argument("--val-limit", type=int, default=0, help="validation images for the gate")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs diff allowed")
    p.add_argument(
        "--no-explain",
        action="store_true",
        help="skip the Grad-CAM explain graph (made by default)",
    )
    return p


def export(argv: list[str], after_export: AfterExport | None = None) -> int:
    """Export to ONNX with a parity gate; writes the repository entry. `after_export(repo,
    name, version, checkpoint)` runs once the entry is written (the composition root adds the
    explain graph with it unless --no-explain)."""
    args = _export_parser().parse_args(argv)
    if args.tensorrt:
        from vision.tensorrt import unavailable_reason

        if reason := unavailable_reason():
            print(f"--tensorrt needs an NVIDIA GPU: {reason}", file=sys.stderr)
            return 2
    from vision.detect.exporting import ExportOptions, export_detector, load_checkpoint
    from vision.paths import default_repository

    code = export_detector(
        ExportOptions(
            checkpoint=args.checkpoint,
            repo=args.repo,
            name=args.name,
            recipe=args.recipe,
            version=args.version,
            int8=args.int8,
            tensorrt=args.tensorrt,
            parity_images=args.parity_images,
            val_limit=args.val_limit,
            tolerance=args.tolerance,
        )
    )
    if code or after_export is None or args.no_explain:
        return code
    name = args.name or load_checkpoint(args.checkpoint)[1].name
    return after_export(args.repo or default_repository(), name, args.version, args.checkpoint)


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision eval", description="Evaluate a served detector.")
    p.add_argument("--task", default="detection")
    p.add_argument("--model", required=True)
    p.add_argument("--repo", type=Path)
    p.add_argument("--version", type=int, default=0, help="0 = latest")
    p.add_argument("--split", default="test")
    p.add_argument("--data", type=Path, help="dataset folder (default: the recipe's)")
    p.add_argument("--format", choices=["voc", "coco", "yolo", "deeppcb"])
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", type=Path, help="report folder (default reports/<model>)")
    p.add_argument(
        "--update-card",
        action="store_true",
        help="record these figures in the model card (default: the card is left as it is)",
    )
    p.add_argument("--no-card", action="store_true", help=argparse.SUPPRESS)  # the default now
    _operating_point_flags(p)
    return p


def _operating_point_flags(p: argparse.ArgumentParser) -> None:
    """--target-escape-rate, --no-operating-point, --write-operating-point."""
    p.add_argument(
        "--target-escape-rate",
        type=float,
        default=0.01,
        help="image-level escape rate the pass/fail threshold must meet (chosen on val)",
    )
    p.add_argument(
        "--no-operating-point", action="store_true", help="skip the pass/fail operating point"
    )
    p.add_argument(
        "--write-operating-point",
        action="store_true",
        help="record the selected threshold in the model's config (inspection rules) and card",
    )


def evaluate(argv: list[str]) -> int:
    """Evaluate through ONNX Runtime and the serving pipeline; writes a JSON report and plots."""
    import json

    from vision.detect.evaluate import evaluate_detector

    args = _eval_parser().parse_args(argv)
    report = evaluate_detector(
        args.model,
        repo=args.repo,
        version=args.version,
        split=args.split,
        data=args.data,
        fmt=args.format,
        limit=args.limit,
        out=args.out,
        update_card=args.update_card,
        target_escape=None if args.no_operating_point else args.target_escape_rate,
        write_point=args.write_operating_point,
    )
    print(json.dumps({k: v for k, v in report.items() if k != "voc_ap50_per_class"}, indent=1))
    return 0


COMMANDS = {"train": train, "export": export, "eval": evaluate}


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand named by the first argument; print usage and return 2 if unknown."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m vision.detect.cli {{{'|'.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
