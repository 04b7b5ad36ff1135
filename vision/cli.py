"""Domain subcommands of the `vision` command (train, export, eval), dispatched by task.

Each task package (`vision.segment`, `vision.detect`) has a `cli` module with
`train(argv)`, `export(argv)` and `evaluate(argv)`, each returning an exit code. Torch is
imported only inside those modules, so the serving install can still run `vision serve`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from vision.errors import VisionError

RECIPE_TASKS = {
    "retina-vessels": "segmentation",
    "tile-defects": "segmentation",
    "pcb-defects": "detection",
    "blood-cells": "detection",
}
TASK_PACKAGES = {"segmentation": "vision.segment.cli", "detection": "vision.detect.cli"}
COMMANDS = {"train": "train", "export": "export", "eval": "evaluate"}


def _peek(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--task", choices=sorted(TASK_PACKAGES))
    parser.add_argument("--recipe")
    parser.add_argument("--model")
    parser.add_argument("--repo", default=None)
    known, _ = parser.parse_known_args(argv)
    return known


def task_of(argv: list[str]) -> str:
    """The task a domain command is about: --task, else --recipe, else the model's config."""
    known = _peek(argv)
    if known.task:
        return known.task
    if known.recipe in RECIPE_TASKS:
        return RECIPE_TASKS[known.recipe]
    if known.model:
        from vision.config import load_config
        from vision.paths import default_repository

        repo = Path(known.repo) if known.repo else default_repository()
        return load_config(repo / known.model).task
    raise SystemExit(
        "say which task: --task segmentation|detection, or --recipe "
        f"{'|'.join(RECIPE_TASKS)}, or --model NAME (a model in the repository)"
    )


def run(command: str, argv: list[str]) -> int:
    """Run domain command `command` with its arguments; a missing file or a domain error is one
    line on stderr and exit code 2, not a traceback."""
    try:
        return _dispatch(command, argv)
    except (FileNotFoundError, VisionError) as exc:
        print(f"vision {command}: {exc}", file=sys.stderr)
        return 2


def _dispatch(command: str, argv: list[str]) -> int:
    if command == "synth":
        from vision.synth.cli import synth

        return int(synth(argv) or 0)
    if command == "synth-eval":
        from vision.synth.evalcli import synth_eval

        return int(synth_eval(argv) or 0)
    if command == "synth-detect":
        from vision.synth.detect_cli import synth_detect

        return int(synth_detect(argv) or 0)
    if command == "xai-eval":
        from vision.xai.cli import xai_eval

        return int(xai_eval(argv) or 0)
    if command in ("explain", "explain-export"):
        from vision.xai import cli as xai_cli

        runner = xai_cli.explain if command == "explain" else xai_cli.explain_export
        return int(runner(argv) or 0)
    module = importlib.import_module(TASK_PACKAGES[task_of(argv)])
    return int(getattr(module, COMMANDS[command])(argv) or 0)
