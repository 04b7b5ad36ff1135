"""The `vision` domain CLI: user errors are one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

from app.cli import run


def test_missing_model_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code = run("eval", ["--model", "absent", "--repo", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("vision eval: ") and "\n" not in err
