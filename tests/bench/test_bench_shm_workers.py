"""Smoke runs of bench.shm and bench.workers: a fraction of a second per path.

Asserts only that they run, print their ratio lines and write their JSON, never any speed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(module: str, *args: str) -> str:
    command = [sys.executable, "-m", module, "--duration", "0.3", "--rounds", "1", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_bench_shm_prints_ratios_and_writes_json(tmp_path: Path) -> None:
    out = _run("bench.shm", "--concurrency", "1", "--json", str(tmp_path / "shm.json"))
    for path in ("gRPC bytes", "shared memory"):
        pattern = rf"^ratio seg256 c=1 ModelInfer {path} / in-process session\.run: throughput "
        assert re.search(pattern + r"\d+\.\d+x", out, re.M), out
    assert re.search(r"^gRPC floor: an empty ServerLive round trip, p50 \d", out, re.M), out
    assert re.search(r"protobuf \d+ us, lean \d+ us", out), out
    record = json.loads((tmp_path / "shm.json").read_text())
    assert {"command", "rows", "ratios", "codec_us", "goals"} <= set(record)
    assert all(row["errors"] == 0 for row in record["rows"]), record["rows"]


def test_bench_workers_prints_ratios_and_writes_json(tmp_path: Path) -> None:
    out = _run(
        "bench.workers",
        "--workers",
        "1,2",
        "--concurrency",
        "2",
        "--json",
        str(tmp_path / "w.json"),
    )
    for model in ("tiny", "seg256"):
        assert re.search(rf"^ratio {model} workers=2 / workers=1: \d+\.\d+x", out, re.M), out
    record = json.loads((tmp_path / "w.json").read_text())
    assert {row["path"] for row in record["rows"]} == {"workers=1", "workers=2"}
    assert all(row["errors"] == 0 for row in record["rows"]), record["rows"]
    assert re.search(r"^server CPU per request tiny workers=2: \d+ us", out, re.M), out
    assert set(record["server_cpu_per_request_us"]) >= {"tiny workers=1", "seg256 workers=2"}


def test_bench_workers_alternatives_side_by_side(tmp_path: Path) -> None:
    """Ours and KServe on the tiny model in one run (only where bench.serving made its venv)."""
    if not (ROOT / "bench" / ".venvs" / "kserve" / ".bench-requirements").exists():
        pytest.skip("no KServe venv: run python -m bench.workers --alternatives once to make it")
    out = _run(
        "bench.workers", "--concurrency", "2", "--alternatives", "--json", str(tmp_path / "w.json")
    )
    assert re.search(r"^ratio tiny workers=1 / kserve 0\.21\.\S+: \d+\.\d+x req/s", out, re.M), out
    record = json.loads((tmp_path / "w.json").read_text())
    assert any(key.startswith("tiny workers=1 / kserve") for key in record["versus_alternatives"])
    assert all(row["errors"] == 0 for row in record["rows"]), record["rows"]


def test_bench_shm_levers_runs_every_lever_beside_the_server_as_shipped(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.shm_levers", "--calls", "5", "--seconds", "0.4"]
    command += ["--levers", "threaded,inline,switch", "--json", str(tmp_path / "levers.json")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "levers.json").read_text())
    servers = {"base", "base again", "threaded", "inline", "switch"}
    for model in ("seg256", "tiny"):
        paths = set(record["latency_c1"][model])
        assert {f"{s} {kind}" for s in servers for kind in ("bytes", "shm")} <= paths, paths
    assert set(record["tiny_closed_loop"]["c=8"]) == servers
