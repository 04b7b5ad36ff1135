"""The `vision` domain CLI: user errors are one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import run
from tests.serving.tiny_models import build_repository


def test_missing_model_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    code = run("eval", ["--model", "absent", "--repo", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("vision eval: ") and "\n" not in err


@pytest.mark.parametrize(
    ("command", "argv", "says"),
    [
        ("train", ["--task", "detection", "--recipe", "nope"], "unknown recipe 'nope'"),
        ("train", ["--task", "detection"], "give --recipe NAME, or --format"),
        ("train", ["--task", "segmentation", "--recipe", "nope"], "unknown recipe 'nope'"),
        ("export", ["--task", "detection", "--checkpoint", "absent.pt"], "no such checkpoint"),
    ],
)
def test_domain_errors_of_task_commands_are_one_line_and_exit_2(command, argv, says, capsys):
    assert run(command, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vision {command}: ") and says in err and "\n" not in err


def test_eval_of_a_missing_version_names_the_versions_there(tmp_path: Path, capsys) -> None:
    build_repository(tmp_path)
    argv = ["--model", "boxes", "--repo", str(tmp_path), "--version", "9", "--format", "voc"]
    assert run("eval", [*argv, "--data", str(tmp_path)]) == 2
    assert "version 9 has no model.onnx; versions: 1" in capsys.readouterr().err


def test_explain_without_explain_graph_says_what_to_run(tmp_path: Path, capsys) -> None:
    build_repository(tmp_path)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert run("explain", [str(image), "--model", "bright", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "vision explain-export --model bright" in err and "\n" not in err
