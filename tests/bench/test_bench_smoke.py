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


def test_bench_line_search_and_backlog_logic() -> None:
    from bench.line import Probe, RateSearch, backlog_ms, judge

    assert backlog_ms([10.0] * 9) == 0.0
    assert backlog_ms([10.0, 10.0, 10.0, 20.0, 20.0, 20.0, 40.0, 40.0, 40.0]) == 30.0
    assert backlog_ms([5.0, 6.0]) == 0.0  # too few frames for thirds
    assert judge(90.0, 5.0, 100, 100, fps=10.0) == ""
    assert "p99" in judge(120.0, 0.0, 100, 100, fps=10.0)
    assert "backlog" in judge(90.0, 60.0, 100, 100, fps=10.0)
    assert "answered 90/100" in judge(50.0, 0.0, 90, 100, fps=10.0)

    search = RateSearch(hi=16.0)
    fields = dict(path="stream", model="m", cameras=1, duration_s=1.0, scheduled=1, sent=1)
    fields |= dict(answered=1, errors=0, dropped=0, late=0, p50_ms=1.0, p99_ms=1.0, max_ms=1.0)
    fields |= dict(backlog_ms=0.0, server_p50_ms=1.0)
    for fps_ok in (True, False, True):  # 8 ok -> 12 no -> 10 ok -> next 11
        search.record(Probe(fps=search.next_rate(), reason="" if fps_ok else "slow", **fields))
    assert (search.lo, search.hi, search.next_rate()) == (10.0, 12.0, 11.0)
    assert search.summary()["sustained_fps"] == 10.0


def test_bench_line_plot_without_a_sustained_rate(tmp_path: Path) -> None:
    """A loaded machine may sustain no probed rate: no common-rate probes, still a plot."""
    from bench.line import PATHS, Config, Probe, RateSearch, Subject, plot

    fields = dict(model="m", cameras=1, duration_s=1.0, scheduled=1, sent=1, answered=1)
    fields |= dict(errors=0, dropped=0, late=0, p50_ms=1.0, p99_ms=900.0, max_ms=900.0)
    fields |= dict(backlog_ms=0.0, server_p50_ms=1.0)
    searches = {}
    for path in PATHS:
        search = RateSearch(hi=16.0)
        search.record(Probe(path=path, fps=search.next_rate(), reason="p99", **fields))
        searches[path] = search
    config = Config(Subject("m", "m", "fp32", [], "1x1"), 1, 1.0, searches)
    assert config.common == {}
    plot([config], tmp_path / "line.png")
    assert (tmp_path / "line.png").stat().st_size > 0


def test_bench_line_quick_writes_json(tmp_path: Path) -> None:
    import json

    import pytest

    from vision.paths import datasets_root

    if not (datasets_root() / "bccd" / "BCCD" / "JPEGImages").is_dir():
        pytest.skip(f"BCCD not found under {datasets_root()}")
    command = [sys.executable, "-m", "bench.line", "--quick", "--models", "blood-cells"]
    command += ["--precisions", "fp32", "--cameras", "1", "--probe-s", "1", "--soak-s", "2"]
    command += ["--out", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "line.json").read_text())
    [config] = result["configs"]
    assert {"stream", "unary", "gain", "common_rate"} <= set(config)
    assert len(config["stream"]["probes"]) == len(config["unary"]["probes"]) == 2
    assert result["soak"] or config["stream"]["sustained_fps"] == 0  # no soak without a rate
    for soak in result["soak"]:
        assert {"p50_ms", "p99_ms", "max_ms", "drops", "backlog_ms"} <= set(soak)
    assert (tmp_path / "line.png").stat().st_size > 0
    assert re.search(r"^blood-cells\s+fp32\s+1\s+640x480", done.stdout, re.M), done.stdout
