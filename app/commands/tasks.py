"""`vision train | export | eval`: dispatched to the task's package by --task, --recipe or --model.

Each task package (`vision.segment`, `vision.detect`) has a `cli` module with `train(argv)`,
`export(argv)` and `evaluate(argv)`, each returning an exit code. Torch is imported only inside
those modules, so the serving install can still run `vision serve`.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from vision.config import load_config
from vision.errors import ConfigError
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
    known, _ = parser.parse_known_args(argv)
    return known.task, known.recipe, known.model, known.repo or default_repository()


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
        "say which task: --task segmentation|detection, or --recipe "
        f"{'|'.join(RECIPE_TASKS)}, or --model NAME (a model in the repository)"
    )


def _dispatch(function: str, argv: list[str]) -> int:
    module = importlib.import_module(TASK_PACKAGES[task_of(argv)])
    return int(getattr(module, function)(argv) or 0)


def train(argv: list[str]) -> int:
    """`vision train`; a segmentation recipe that synthesises online gets its factory here.

    Segmentation training never imports synthesis (import contracts): the composition root
    injects `vision.synth.online.from_spec` as the maker of its extra images.
    """
    if task_of(argv) == "segmentation":
        from vision.segment.cli import train as train_segmenter
        from vision.synth.online import from_spec

        return int(train_segmenter(argv, make_online=from_spec) or 0)
    return _dispatch("train", argv)


def export(argv: list[str]) -> int:
    """`vision export`."""
    return _dispatch("export", argv)


def evaluate(argv: list[str]) -> int:
    """`vision eval`."""
    return _dispatch("evaluate", argv)
