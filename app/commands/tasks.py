"""`vision train | export | eval`: dispatched to the task's package by --task, --recipe or --model.

Each task package (`vision.segment`, `vision.detect`) has a `cli` module with `train(argv)`,
`export(argv)` and `evaluate(argv)`, each returning an exit code. Torch is imported only inside
those modules, so the serving install can still run `vision serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from pathlib import Path

from vision.config import load_config
from vision.errors import ConfigError, VisionError
from vision.paths import default_repository

RECIPE_TASKS = {
    "retina-vessels": "segmentation",
    "tile-defects": "segmentation",
    "pcb-defects": "detection",
    "blood-cells": "detection",
    "hippocampus": "volumetric_segmentation",
}
TASK_PACKAGES = {
    "segmentation": "vision.segment.cli",
    "detection": "vision.detect.cli",
    "volumetric_segmentation": "vision.segment3d.cli",
}


def _peek(argv: list[str]) -> tuple[str | None, str | None, str | None, Path]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--task", choices=sorted(TASK_PACKAGES))
    parser.add_argument("--recipe")
    parser.add_argument("--model")
    parser.add_argument("--repo", type=Path, default=None)
    parser.add_argument("--format")  # a detection dataset format: voc | coco | yolo | deeppcb
    parser.add_argument("--images")  # a folder of images (+ --masks): segmentation
    known, _ = parser.parse_known_args(argv)
    task = known.task or _implied_task(known.format, known.images)
    return task, known.recipe, known.model, known.repo or default_repository()


def _implied_task(fmt: str | None, images: str | None) -> str | None:
    """The task a dataset flag implies: --format is detection's, --images segmentation's."""
    if fmt:
        return "detection"
    return "segmentation" if images else None


def asks_for_help(argv: list[str]) -> bool:
    """Whether `argv` asks for help (-h / --help)."""
    return any(arg in ("-h", "--help") for arg in argv)


def task_of(argv: list[str]) -> str:
    """The task a domain command is about: --task, else --recipe, else the model's config."""
    task, recipe, model, repo = _peek(argv)
    if task:
        return task
    if recipe in RECIPE_TASKS:
        return RECIPE_TASKS[recipe]
    if model:
        return load_config(repo / model).task
    raise ConfigError(
        "say which task: --task segmentation|detection (--format voc|coco|yolo|deeppcb implies "
        "detection, --images segmentation), or --recipe "
        f"{'|'.join(RECIPE_TASKS)}, or --model NAME (a model in the repository)"
    )


def _known_task(argv: list[str]) -> str | None:
    try:
        return task_of(argv)
    except ConfigError:
        return None


def print_overview(command: str) -> int:
    """`vision COMMAND --help` without a task: how the task is chosen, then each task's flags."""
    print(
        f"usage: vision {command} (--task TASK | --recipe NAME | --model NAME) [flags]\n\n"
        f"The task is --task ({' | '.join(TASK_PACKAGES)}), else the recipe's "
        f"({', '.join(f'{k}: {v}' for k, v in RECIPE_TASKS.items())}), else the model's "
        f"config.yaml. Each task's flags follow.\n"
    )
    for task, module_name in TASK_PACKAGES.items():
        print(f"--- vision {command} --task {task} ---", flush=True)
        module = importlib.import_module(module_name)
        function = getattr(module, "evaluate" if command == "eval" else command, None)
        if function is None:
            continue
        with contextlib.suppress(SystemExit):  # argparse exits after printing help
            function(["--help"])
    return 0


def _dispatch(function: str, argv: list[str], **extra: object) -> int:
    task = _known_task(argv) if asks_for_help(argv) else task_of(argv)
    if task is None:
        return print_overview("eval" if function == "evaluate" else function)
    module = importlib.import_module(TASK_PACKAGES[task])
    return int(getattr(module, function)(argv, **extra) or 0)


def add_explain_graph(repo: Path, name: str, version: int, checkpoint: Path) -> int:
    """After `vision export`: the Grad-CAM explain graph of the new version (`vision.xai`);
    1 with a message that says how to retry when it cannot be made (the plain model stays)."""
    from vision.xai.export import add_explain_graph as add_graph

    try:
        entry = add_graph(Path(repo), name, Path(checkpoint), version, "gradcam", None)
    except (VisionError, OSError, RuntimeError) as exc:
        print(
            f"vision export: {name} v{version} is exported, but its explain graph is not: {exc}; "
            f"retry with `vision explain-export --model {name} --checkpoint {checkpoint}`",
            file=sys.stderr,
        )
        return 1
    print(f"explain graph {entry['file']} added to {name} v{version}")
    return 0


def train(argv: list[str]) -> int:
    """`vision train`; a segmentation recipe that synthesises online gets its factory here.

    Segmentation training never imports synthesis (import contracts): the composition root
    injects `vision.synth.online.from_spec` as the maker of its extra images.
    """
    if not asks_for_help(argv) and task_of(argv) == "segmentation":
        from vision.segment.cli import train as train_segmenter
        from vision.synth.online import from_spec

        return int(train_segmenter(argv, make_online=from_spec) or 0)
    return _dispatch("train", argv)


def export(argv: list[str]) -> int:
    """`vision export`: the task's export, then the explain graph (unless --no-explain)."""
    task = _known_task(argv)
    if task == "volumetric_segmentation" or asks_for_help(argv):
        return _dispatch("export", argv)
    return _dispatch("export", argv, after_export=add_explain_graph)


def evaluate(argv: list[str]) -> int:
    """`vision eval`."""
    return _dispatch("evaluate", argv)
