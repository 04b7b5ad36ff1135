"""Paths of dcmtk's command-line tools, never pynetdicom's console scripts of the same names.

pynetdicom installs `echoscu`, `storescu`, `storescp`, ... into the virtualenv's `bin/`, which
`scripts/test` puts first on PATH; they take other flags and print other messages than dcmtk's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _venv_bins() -> set[Path]:
    return {Path(sys.prefix, "bin").resolve(), Path(sys.executable).parent.resolve()}


def _in_a_virtualenv(folder: Path) -> bool:
    """True for this virtualenv's `bin/` and any other's (a clone's, a parent shell's)."""
    resolved = folder.resolve()
    return resolved in _venv_bins() or (resolved.parent / "pyvenv.cfg").is_file()


def tool_path(name: str) -> str | None:
    """The first `name` on PATH outside every virtualenv (dcmtk's), or None."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / name
        if _in_a_virtualenv(candidate.parent):
            continue
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def tool(name: str) -> str:
    """dcmtk's `name` (its bare name when absent, so the caller's error says which)."""
    return tool_path(name) or name
