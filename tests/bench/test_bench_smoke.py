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


def test_bench_latency_reports_int8_speedup(tmp_path: Path, capsys) -> None:
    import shutil

    from bench import latency
    from bench.models import write_repository

    write_repository(tmp_path, queue_delay_ms=0)
    shutil.copytree(tmp_path / "tiny", tmp_path / "tiny-int8")
    argv = ["--repo", str(tmp_path), "--models", "tiny,tiny-int8", "--batches", "1,8"]
    assert latency.main([*argv, "--rounds", "1", "--per-round", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^tiny\s+8\s+[\d.]+\s+[\d.]+\s+[\d.]+\s*$", out, re.M), out
    assert re.search(r"^tiny-int8\s+1\s+([\d.]+\s+){3}\d+\.\d\d$", out, re.M), out
