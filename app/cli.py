"""The `vision` command: one registry of subcommands, each imported only when it runs.

Every subcommand is a function `main(argv) -> exit code` that parses its own flags, so the
serving install (no torch) can run `vision serve` while `vision train` imports torch on demand.
A domain error (`vision.errors.VisionError`) or a missing file is one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from vision.errors import VisionError


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one help line, and `module:function` taking argv."""

    name: str
    help: str
    target: str

    def load(self) -> Callable[[list[str]], int | None]:
        """The subcommand's function (imports its module)."""
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


COMMANDS: tuple[Command, ...] = (
    Command(
        "serve", "run the server (gRPC + HTTP) over a model repository", "app.commands.serve:main"
    ),
    Command(
        "token",
        "make (printed once, stored hashed), revoke or list the server's bearer tokens",
        "app.commands.token:main",
    ),
    Command(
        "infer",
        "send one image to a running server and print the result",
        "app.commands.infer:main",
    ),
    Command(
        "line",
        "stream a camera, video or image folder to Inspect: verdict log, reject actions",
        "line.cli:main",
    ),
    Command(
        "dicom-node",
        "the DICOM node: run (as its own process), check-rules (which rule files match, why)",
        "app.commands.dicom:main",
    ),
    Command(
        "review",
        "review tool accounts, tokens, offline export and report (vision serve --review-dir)",
        "app.commands.review:main",
    ),
    Command(
        "train",
        "train a reference model or one on your own data (train extra)",
        "app.commands.tasks:train",
    ),
    Command(
        "export",
        "export a checkpoint to ONNX, parity-gated, into the repository (train extra)",
        "app.commands.tasks:export",
    ),
    Command(
        "eval",
        "evaluate a repository model through the server's ONNX path (train extra)",
        "app.commands.tasks:evaluate",
    ),
    Command(
        "synth",
        "write synthetic rare-class images with exact labels, provenance (train extra)",
        "vision.synth.cli:synth",
    ),
    Command(
        "synth-detect",
        "real-vs-synthetic detector: train, evaluate (train extra); check (ONNX)",
        "vision.synth_detect.cli:synth_detect",
    ),
    Command(
        "synth-eval",
        "paired experiment: train without/with synthetic images, score real tests",
        "vision.synth_eval.cli:synth_eval",
    ),
    Command(
        "explain",
        "write Grad-CAM overlay PNGs for an image (in-process, torch-free)",
        "vision.xai.cli:explain",
    ),
    Command(
        "explain-export",
        "add a Grad-CAM explain graph to a repository model (train extra)",
        "vision.xai.cli:explain_export",
    ),
    Command(
        "deid",
        "de-identify DICOM files (PS3.15 Basic Profile; UIDs, dates, private tags, burned-in)",
        "vision.deid.cli:deid",
    ),
    Command(
        "xai-eval",
        "score Grad-CAM quality: deletion/insertion, randomisation, pointing (train extra)",
        "vision.xai.cli:xai_eval",
    ),
)
REGISTRY = {c.name: c for c in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the subcommands; each parses its own flags."""
    parser = argparse.ArgumentParser(
        prog="vision",
        description="Inference server for medical and industrial imaging.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub.add_parser(command.name, help=command.help, add_help=False)
    return parser


def run(name: str, argv: list[str]) -> int:
    """Run subcommand `name` with `argv`; domain errors are one line on stderr and exit 2."""
    try:
        return int(REGISTRY[name].load()(argv) or 0)
    except (FileNotFoundError, VisionError) as exc:
        print(f"vision {name}: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vision` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in REGISTRY:
        build_parser().parse_args(argv)  # prints usage, exits 2 (or 0 for --help)
        return 2
    return run(argv[0], argv[1:])
