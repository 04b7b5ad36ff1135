"""The `vision` domain CLI: user errors are one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from vision.cli import run
from vision.paths import latest_version


def test_missing_model_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code = run("eval", ["--model", "absent", "--repo", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("vision eval: ") and "\n" not in err


def test_latest_version_is_the_highest_numbered_folder(tmp_path: Path) -> None:
    for name in ("1", "10", "2", "notes"):
        (tmp_path / name).mkdir()
    assert latest_version(tmp_path) == 10
    with pytest.raises(FileNotFoundError):
        latest_version(tmp_path / "notes")
