"""The review tool runs in the serving install: no torch, and highdicom only for DICOM SEG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_review_tool_imports_without_torch_or_highdicom() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['highdicom'] = None\n"
        "import review.tool, review.api, review.capture, review.upload, app.commands.review\n"
        "from review.export import ExportError, _seg_writer\n"
        "try:\n    _seg_writer()\nexcept ExportError as e:\n    print('ok', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "dicom extra" in result.stdout
