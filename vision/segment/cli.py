"""`vision train|export|eval` for segmentation recipes (`python -m vision.segment.cli CMD ...`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from vision.datasets.locations import dataset_dir
from vision.errors import ConfigError, DatasetNotFoundError
from vision.paths import default_repository


def _data_root(dataset: str, given: str | None) -> Path:
    return dataset_dir(dataset, given)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def train(argv: list[str], make_online: Any = None) -> int:
    """Train a recipe into runs/<recipe>/ (checkpoints each epoch; --resume continues).

    A recipe that synthesises online (`extra["online_synth"]`, or `--online-synth`) needs
    `make_online`, an `ExtraImagesFactory` the caller injects (the `vision train` command passes
    `vision.synth.online.from_spec`; segmentation never imports synthesis itself)."""
    p = argparse.ArgumentParser(prog="vision train")
    p.add_argument("--recipe", help="a reference recipe, or leave out and give --images/--masks")
    p.add_argument("--images", help="your own data: a folder of images ...")
    p.add_argument("--masks", help="... and one of same-stem masks (> 127 = foreground)")
    p.add_argument("--test-images", help="optional held-out test images (+ --test-masks)")
    p.add_argument("--test-masks")
    p.add_argument("--name", help="model name for --images training")
    p.add_argument("--size", type=int, default=256, help="square input size for --images")
    p.add_argument("--gray", action="store_true", help="--images are greyscale")
    p.add_argument("--task", default=None)
    p.add_argument(
        "--epochs", type=int, help="epoch budget; training stops at --epochs or --minutes, first"
    )
    p.add_argument("--minutes", type=float, help="wall-clock budget; the schedule follows it")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--init",
        type=Path,
        help="stage 2: fine-tune these served weights (weights.safetensors) with the image head "
        "trained jointly (recipe extra['finetune']; --epochs/--minutes set its budget)",
    )
    p.add_argument("--data", help="dataset folder (default: the shared datasets)")
    p.add_argument("--out", help="run folder (default: runs/<recipe>)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--synthetic", type=Path, help="`vision synth` folder: extra training images")
    p.add_argument("--synthetic-ratio", type=float, default=0.25, help="synthetic share per batch")
    p.add_argument(
        "--online-synth",
        choices=("copy-paste", "procedural"),
        help="make that share fresh while training (class-balanced over --synth-classes)",
    )
    p.add_argument("--synth-classes", default="Fray,Crack", help="rare classes for --online-synth")
    p.add_argument(
        "--online-reuse", type=int, default=4, help="batches each made image serves (crops)"
    )
    a = p.parse_args(argv)
    _threads(a.threads)
    from vision.segment.train import train as run_training

    recipe = _train_recipe(a)
    out = Path(a.out or f"runs/{recipe.name}")
    root = _data_root(recipe.dataset, a.data) if recipe.dataset != "folder" else Path(a.images)
    if a.online_synth:
        recipe = _with_online(a, recipe)
    if a.init:
        return _finetune(a, recipe, root, out, make_online)
    summary = run_training(
        recipe,
        root,
        out,
        resume=a.resume,
        synthetic=a.synthetic,
        ratio=a.synthetic_ratio if a.synthetic else 0.0,
        make_online=make_online,
    )
    print(f"trained {recipe.name}: {summary} -> {out}")
    return 0


def _finetune(a: argparse.Namespace, recipe: Any, root: Path, out: Path, make_online: Any) -> int:
    """Stage 2 (`vision.segment.finetune`): the stage-1 recipe kept, the fine-tune budget from
    --epochs/--minutes recorded in its extra["finetune"] with the weights it started from."""
    import dataclasses

    from vision.segment.finetune import finetune
    from vision.segment.model import get_recipe

    base = get_recipe(recipe.name, seed=a.seed)
    given = {"epochs": a.epochs, "minutes": a.minutes, "init": str(a.init)}
    spec = {**base.extra.get("finetune", {}), **{k: v for k, v in given.items() if v is not None}}
    recipe = dataclasses.replace(base, extra={**base.extra, "finetune": spec})
    summary = finetune(recipe, root, out, a.init, resume=a.resume, make_online=make_online)
    print(f"fine-tuned {recipe.name}: {summary} -> {out}")
    return 0


def _with_online(a: argparse.Namespace, recipe: Any) -> Any:
    """The recipe with its online synthesis set from the command line (magnetic-tile only);
    `train` draws it from the recorded training split."""
    import dataclasses

    if a.synthetic:
        raise ConfigError("give --synthetic (a stored folder) or --online-synth, not both")
    if recipe.dataset != "magnetic-tile":
        raise ConfigError(f"--online-synth: magnetic-tile only, not {recipe.dataset}")
    spec = {
        "classes": [c.strip() for c in a.synth_classes.split(",") if c.strip()],
        "ratio": a.synthetic_ratio,
        "generator": a.online_synth,
        "reuse": a.online_reuse,
    }
    return dataclasses.replace(recipe, extra={**recipe.extra, "online_synth": spec})


def _train_recipe(a: argparse.Namespace) -> Any:
    """The named reference recipe, or a folder recipe for --images/--masks; CLI overrides."""
    import dataclasses

    from vision.datasets.segmentation import load_folder
    from vision.segment.data import channel_stats
    from vision.segment.model import folder_recipe, get_recipe

    overrides = {"epochs": a.epochs, "minutes": a.minutes, "steps_per_epoch": a.steps_per_epoch}
    overrides = {k: v for k, v in {**overrides, "seed": a.seed}.items() if v is not None}
    if a.recipe:
        return get_recipe(a.recipe, **overrides)
    if not (a.images and a.masks and a.name):
        raise ConfigError("give --recipe NAME, or --images DIR --masks DIR --name NAME")
    order = "GRAY" if a.gray else "RGB"
    samples = load_folder(Path(a.images), Path(a.masks))
    if not samples:
        raise DatasetNotFoundError(f"no image in {a.images} has a same-stem mask in {a.masks}")
    stats = channel_stats(samples, order)
    test = (a.test_images, a.test_masks) if a.test_images and a.test_masks else None
    recipe = folder_recipe(a.name, a.images, a.masks, a.size, order, stats, test)
    return dataclasses.replace(recipe, **overrides)


def export(argv: list[str], after_export: Any = None) -> int:
    """Export a checkpoint to ONNX, gate on parity, write the repository entry (+ optional INT8);
    then `after_export(repo, name, version, checkpoint)` (the composition root's explain graph)
    unless --no-explain."""
    p = argparse.ArgumentParser(prog="vision export")
    p.add_argument("--recipe", help="default: the recipe stored in --checkpoint")
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
    p.add_argument(
        "--no-explain",
        action="store_true",
        help="skip the Grad-CAM explain graph (made by default)",
    )
    a = p.parse_args(argv)
    if a.tensorrt and (reason := _no_tensorrt()):
        print(reason, file=sys.stderr)
        return 2
    _threads(a.threads)
    from vision.segment.export import export_recipe
    from vision.segment.model import get_recipe

    if not (a.recipe or a.checkpoint):
        raise ConfigError("give --recipe NAME and/or --checkpoint runs/<name>/best.pt")
    checkpoint = Path(a.checkpoint or f"runs/{a.recipe}/best.pt")
    recipe = get_recipe(a.recipe) if a.recipe else _stored_recipe(checkpoint)
    repo = Path(a.repo) if a.repo else default_repository()
    code = export_recipe(
        recipe,
        checkpoint,
        repo,
        _data_root(recipe.dataset, a.data) if recipe.dataset != "folder" else Path("."),
        int8=a.int8,
        tensorrt=a.tensorrt,
        version=a.version,
        tolerance=a.tolerance,
        limit=a.limit,
    )
    if code or after_export is None or a.no_explain:
        return code
    return after_export(repo, recipe.name, a.version, checkpoint)


def evaluate(argv: list[str]) -> int:
    """Evaluate a served model through ONNX (Pipeline + OnnxModel); JSON + PNG report."""
    p = argparse.ArgumentParser(prog="vision eval")
    p.add_argument("--model", required=True)
    p.add_argument("--task", default=None)
    p.add_argument("--repo", default=None)
    p.add_argument("--version", type=int, default=0, help="0: the latest")
    p.add_argument("--split", default="test")
    p.add_argument("--data")
    p.add_argument(
        "--images", type=Path, help="evaluate on any folder of images (+ --masks), not a split"
    )
    p.add_argument("--masks", type=Path, help="same-stem masks for --images (> 127 = foreground)")
    p.add_argument("--out", help="default: reports/<model>")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument(
        "--update-card",
        action="store_true",
        help="record these figures in the model card (default: the card is left as it is)",
    )
    p.add_argument("--no-card", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument(
        "--target-escape-rate",
        type=float,
        default=0.01,
        help="image-level escape rate the pass/fail threshold must meet (chosen on val)",
    )
    p.add_argument("--no-operating-point", action="store_true", help="skip the operating point")
    p.add_argument(
        "--write-operating-point",
        action="store_true",
        help="record the selected threshold in the model's config (inspection rules) and card",
    )
    a = p.parse_args(argv)
    if bool(a.images) != bool(a.masks):
        raise ConfigError("give --images and --masks together (a folder of each, same stems)")
    from vision.export import read_card
    from vision.segment.evaluate import evaluate_model
    from vision.segment.model import RECIPES, Recipe

    repo = Path(a.repo) if a.repo else default_repository()
    base = a.model.removesuffix("-int8")
    recipe = RECIPES.get(base) or Recipe(**read_card(repo / base)["recipe"])
    report = evaluate_model(
        recipe,
        repo,
        _data_root(recipe.dataset, a.data) if recipe.dataset != "folder" else Path("."),
        a.split,
        Path(a.out or f"reports/{a.model}"),
        version=a.version,
        limit=a.limit,
        update_card=a.update_card,
        name=a.model,
        target_escape=None if a.no_operating_point else a.target_escape_rate,
        write_point=a.write_operating_point,
        folder=(a.images, a.masks) if a.images else None,
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


def _stored_recipe(checkpoint: Path) -> Any:
    """The recipe a checkpoint was trained with."""
    import torch

    from vision.segment.model import Recipe

    return Recipe(**torch.load(checkpoint, map_location="cpu", weights_only=False)["recipe"])


def _no_tensorrt() -> str | None:
    """Why `--tensorrt` cannot run here (checked before any work), or None."""
    from vision.tensorrt import unavailable_reason

    reason = unavailable_reason()
    return f"--tensorrt needs an NVIDIA GPU: {reason}" if reason else None
