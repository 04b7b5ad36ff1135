"""Layering of the data, task and synthesis packages, lazy imports inside functions included.

vision.datasets is the bottom layer; detection and segmentation read from it and never import
synthesis; synthesis (generators) and the real-vs-synthetic detector never import a task
package; only the paired experiment (vision.synth_eval) sits above tasks and synthesis.
A plain ast walk, so it needs no extra tool (import-linter contracts can encode the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "vision.datasets": (  # plain numpy readers: no torch either
        "torch",
        "torchvision",
        "monai",
        "vision.detect",
        "vision.segment",
        "vision.synth",
        "vision.synth_eval",
        "vision.synth_detect",
    ),
    "vision.detect": ("vision.synth", "vision.synth_eval", "vision.synth_detect"),
    "vision.segment": ("vision.synth", "vision.synth_eval", "vision.synth_detect"),
    "vision.synth": ("vision.detect", "vision.segment", "vision.synth_eval", "vision.synth_detect"),
    "vision.synth_detect": ("vision.detect", "vision.segment", "vision.synth", "vision.synth_eval"),
    "vision.synth_eval": ("vision.synth_detect",),
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    folder = ROOT / package.replace(".", "/")
    assert folder.is_dir(), folder
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted(folder.rglob("*.py"))
        for module in sorted(imported_modules(path))
        if any(_within(module, banned) for banned in FORBIDDEN[package])
    ]
    assert offenders == []
