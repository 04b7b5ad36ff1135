"""Smoke run of the serving benchmark: in-process and our server only, a fraction of a second each.

Asserts only that it runs and prints its ratio lines, never any speed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_serving_prints_ratios() -> None:
    command = [sys.executable, "-m", "bench.serving", "--duration", "0.3", "--rounds", "1"]
    command += ["--concurrency", "1", "--breakdown-calls", "3"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for model in ("seg256", "tiny"):
        pattern = rf"^ratio {model} c=1 ours KServe ModelInfer / in-process session\.run: "
        assert re.search(pattern + r"throughput \d+\.\d+x", done.stdout, re.M), done.stdout
    assert "first error" not in done.stdout, done.stdout
    assert re.search(r"^ours: cold start \d+\.\d+ s, RSS \d+ MiB", done.stdout, re.M)
