"""Runs the tritonclient suite in its own process (tritonclient and our protos cannot share one)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tritonclient_unmodified_against_the_server():
    if importlib.util.find_spec("tritonclient") is None:  # importing it here would clash
        pytest.skip("tritonclient[grpc] not installed")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/tritonclient_suite",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "VISION_TRITONCLIENT_SUITE": "1"},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
