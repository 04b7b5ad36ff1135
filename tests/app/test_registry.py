"""The `vision` command registry: every subcommand resolves; usage errors exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import COMMANDS, REGISTRY, main
from app.commands.tasks import task_of
from vision.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_resolves_to_a_function(command):
    assert callable(command.load())


def test_names_are_unique():
    assert len(REGISTRY) == len(COMMANDS)


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_task_needs_saying_with_a_domain_error():
    with pytest.raises(ConfigError, match="say which task"):
        task_of(["--out", "x"])
    assert task_of(["--recipe", "blood-cells"]) == "detection"
    assert task_of(["--task", "segmentation"]) == "segmentation"


def test_domain_error_is_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vision train: say which task") and "\n" not in err


def test_python_dash_m_app_lists_commands():
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in COMMANDS:
        assert command.name in result.stdout
