"""`vision train|export|eval --recipe hippocampus` (`python -m vision.segment3d.cli CMD ...`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from vision.paths import default_repository

DEFAULT_SPLITS = "splits.json"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="hippocampus")
    p.add_argument("--task", default=None)
    p.add_argument("--data", help="hippocampus folder (default: the shared datasets)")
    p.add_argument("--out", help="run folder (default: runs/<recipe>)")
    p.add_argument("--repo", type=Path, default=None, help="model repository (default: models/)")
    p.add_argument("--splits", type=Path, help="split file (default: <repo>/<recipe>/splits.json)")
    p.add_argument("--threads", type=int, default=2)


def _resolved(a: argparse.Namespace) -> tuple:
    import torch

    from vision.segment3d.data import dataset_root
    from vision.segment3d.recipe import RECIPES

    torch.set_num_threads(a.threads)
    recipe = RECIPES[a.recipe]
    repo = a.repo or default_repository()
    splits = a.splits or repo / recipe.name / DEFAULT_SPLITS
    return recipe, dataset_root(a.data), Path(a.out or f"runs/{recipe.name}"), repo, splits


def train(argv: list[str]) -> int:
    """Train into runs/<recipe>/ (checkpoints each epoch; --resume continues); an ensemble
    recipe trains its members concurrently into runs/<recipe>/seed<k>/ (--seed: one member)."""
    p = argparse.ArgumentParser(prog="vision train")
    _common(p)
    p.add_argument("--minutes", type=float, help="wall-clock budget in minutes (the recipe: 58)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (tests)")
    p.add_argument("--limit-cases", type=int, default=0, help="use only this many cases (tests)")
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="weights and augmentation seed (the recipe: 0); the split stays the split file's",
    )
    a = p.parse_args(argv)
    from vision.segment3d.train import train as run

    recipe, root, out, _, splits = _resolved(a)
    if a.minutes:
        recipe = dataclasses.replace(recipe, minutes=a.minutes)
    if a.seed is not None:
        recipe = dataclasses.replace(recipe, seed=a.seed)
    if len(recipe.ensemble_seeds) > 1 and a.seed is None:
        from vision.segment3d.train import train_members

        summary = train_members(
            recipe, root, out, splits, a.threads, a.resume, a.max_steps, a.limit_cases
        )
    else:
        summary = run(recipe, root, out, splits, a.resume, a.max_steps, a.limit_cases)
    print(f"trained {recipe.name}: {summary} -> {out}")
    return 0


def export(argv: list[str]) -> int:
    """Export the best checkpoint to <repo>/<recipe>/ (ONNX, parity gate, weights, card)."""
    p = argparse.ArgumentParser(prog="vision export")
    _common(p)
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="default: <out>/best.pt, or each member's <out>/seed<k>/best.pt for an ensemble "
        "recipe; given more than once, the softmax mean of those checkpoints is exported",
    )
    p.add_argument("--tolerance", type=float, default=1e-4, help="parity gate (max abs logit)")
    a = p.parse_args(argv)
    from vision.segment3d.export import export as run

    recipe, root, out, repo, splits = _resolved(a)
    checkpoints = a.checkpoint or _default_checkpoints(recipe, out)
    model_dir = run(checkpoints, repo, root, splits, out, a.tolerance)
    print(f"exported {recipe.name} -> {model_dir}")
    return 0


def _default_checkpoints(recipe, out: Path) -> list[Path]:
    if len(recipe.ensemble_seeds) > 1:
        from vision.segment3d.ensemble import member_checkpoints

        return member_checkpoints(out, recipe.ensemble_seeds)
    return [out / "best.pt"]


def evaluate(argv: list[str]) -> int:
    """Evaluate the repository model on the test split through ONNX (report + card metrics)."""
    p = argparse.ArgumentParser(prog="vision eval")
    _common(p)
    p.add_argument("--model", default=None, help="model name in the repository")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--limit-cases", type=int, default=0)
    p.add_argument(
        "--update-card",
        action="store_true",
        help="record these figures in the model card (default: the card is left as it is)",
    )
    p.add_argument("--no-card", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument(
        "--tta-flips",
        type=json.loads,
        default=None,
        help="test-time mirroring as JSON, e.g. '[[0],[1],[2]]' (default: the model's config)",
    )
    a = p.parse_args(argv)
    from vision.segment3d.evaluate import evaluate as run

    recipe, root, out, repo, splits = _resolved(a)
    model_dir = repo / (a.model or recipe.name)
    record = a.update_card and a.tta_flips is None  # the card records what is served
    report = run(model_dir, root, splits, a.split, out, a.limit_cases, record, a.tta_flips)
    print(f"evaluated {model_dir.name} on {a.split}: {report['summary']}")
    return 0


def tta_select(argv: list[str]) -> int:
    """Choose the test-time mirroring on the validation split (report in <out>/tta-val.json)."""
    p = argparse.ArgumentParser(prog="vision tta-select")
    _common(p)
    p.add_argument("--model", default=None, help="model name in the repository")
    p.add_argument("--limit-cases", type=int, default=0)
    p.add_argument(
        "--apply",
        action="store_true",
        help="serve the choice: write it to the model's config (volume.tta_flips) and card",
    )
    a = p.parse_args(argv)
    from vision.segment3d.tta_select import apply, select

    recipe, root, out, repo, splits = _resolved(a)
    model_dir = repo / (a.model or recipe.name)
    result = select(model_dir, root, splits, out, a.limit_cases)
    for name, row in result["candidates"].items():
        print(f"{name:18} passes {row['passes']}  val {row['summary']}")
    print(f"chosen on val (n={result['n']}): {result['chosen']} tta_flips {result['tta_flips']}")
    if a.apply:
        apply(model_dir, result)
        print(f"served by {model_dir}: config volume.tta_flips and card evaluation.tta_selection")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m vision.segment3d.cli train|export|eval ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": train,
        "export": export,
        "eval": evaluate,
        "evaluate": evaluate,
        "tta-select": tta_select,
    }
    if not argv or argv[0] not in commands:
        print("usage: python -m vision.segment3d.cli train|export|eval|tta-select [options]")
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
