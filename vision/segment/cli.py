"""`vision train|export|eval` for segmentation recipes (`python -m vision.segment.cli CMD ...`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vision.paths import datasets_root, default_repository

DATASET_DIRS = {"drive": "drive/DRIVE", "magnetic-tile": "magnetic-tile"}


def _data_root(dataset: str, given: str | None) -> Path:
    return Path(given) if given else datasets_root() / DATASET_DIRS[dataset]


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def train(argv: list[str]) -> int:
    """Train a recipe into runs/<recipe>/ (checkpoints each epoch; --resume continues)."""
    p = argparse.ArgumentParser(prog="vision train")
    p.add_argument("--recipe", required=True)
    p.add_argument("--task", default=None)
    p.add_argument("--epochs", type=int)
    p.add_argument("--minutes", type=float)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data", help="dataset folder (default: the shared datasets)")
    p.add_argument("--out", help="run folder (default: runs/<recipe>)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--synthetic", type=Path, help="`vision synth` folder: extra training images")
    p.add_argument("--synthetic-ratio", type=float, default=0.25, help="synthetic share per batch")
    a = p.parse_args(argv)
    _threads(a.threads)
    from vision.segment.model import get_recipe
    from vision.segment.train import train as run_training

    recipe = get_recipe(
        a.recipe, epochs=a.epochs, minutes=a.minutes, steps_per_epoch=a.steps_per_epoch, seed=a.seed
    )
    out = Path(a.out or f"runs/{a.recipe}")
    summary = run_training(
        recipe,
        _data_root(recipe.dataset, a.data),
        out,
        resume=a.resume,
        synthetic=a.synthetic,
        ratio=a.synthetic_ratio if a.synthetic else 0.0,
    )
    print(f"trained {recipe.name}: {summary} -> {out}")
    return 0


def export(argv: list[str]) -> int:
    """Export a checkpoint to ONNX, gate on parity, write the repository entry (+ optional INT8)."""
    p = argparse.ArgumentParser(prog="vision export")
    p.add_argument("--recipe", required=True)
    p.add_argument("--task", default=None)
    p.add_argument("--checkpoint", help="default: runs/<recipe>/best.pt")
    p.add_argument("--repo", default=None)
    p.add_argument("--data")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--tensorrt", action="store_true", help="also build + check a TensorRT engine")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=0.5, help="metric points (percent)")
    p.add_argument("--limit", type=int, default=0, help="evaluate on at most N images per split")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.tensorrt and (reason := _no_tensorrt()):
        print(reason, file=sys.stderr)
        return 2
    _threads(a.threads)
    from vision.segment.export import export_recipe
    from vision.segment.model import get_recipe

    recipe = get_recipe(a.recipe)
    checkpoint = Path(a.checkpoint or f"runs/{a.recipe}/best.pt")
    repo = Path(a.repo) if a.repo else default_repository()
    return export_recipe(
        recipe,
        checkpoint,
        repo,
        _data_root(recipe.dataset, a.data),
        int8=a.int8,
        tensorrt=a.tensorrt,
        version=a.version,
        tolerance=a.tolerance,
        limit=a.limit,
    )


def evaluate(argv: list[str]) -> int:
    """Evaluate a served model through ONNX (Pipeline + OnnxModel); JSON + PNG report."""
    p = argparse.ArgumentParser(prog="vision eval")
    p.add_argument("--model", required=True)
    p.add_argument("--task", default=None)
    p.add_argument("--repo", default=None)
    p.add_argument("--version", type=int, default=0, help="0: the latest")
    p.add_argument("--split", default="test")
    p.add_argument("--data")
    p.add_argument("--out", help="default: reports/<model>")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--no-card", action="store_true", help="do not update the model card")
    a = p.parse_args(argv)
    from vision.segment.evaluate import evaluate_model
    from vision.segment.model import get_recipe

    recipe = get_recipe(a.model.removesuffix("-int8"))
    repo = Path(a.repo) if a.repo else default_repository()
    report = evaluate_model(
        recipe,
        repo,
        _data_root(recipe.dataset, a.data),
        a.split,
        Path(a.out or f"reports/{a.model}"),
        version=a.version,
        limit=a.limit,
        update_card=not a.no_card,
        name=a.model,
    )
    print({k: v for k, v in report["metrics"].items() if k != "per_class"})
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m vision.segment.cli train|export|eval ...`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train, "export": export, "eval": evaluate}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m vision.segment.cli {{{'|'.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())


def _no_tensorrt() -> str | None:
    """Why `--tensorrt` cannot run here (checked before any work), or None."""
    from vision.tensorrt import unavailable_reason

    reason = unavailable_reason()
    return f"--tensorrt needs an NVIDIA GPU: {reason}" if reason else None
