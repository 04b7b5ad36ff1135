"""`bench.security` runs end to end (four real servers: plaintext, tokens, TLS, mTLS) and
prints one line per setting with its ratio to plaintext; no speed is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_security_prints_a_row_per_setting():
    pytest.importorskip("cryptography", reason="bench.security needs the dev extra")
    done = subprocess.run(
        [sys.executable, "-m", "bench.security", "--calls", "20", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line}
    for setting in ("plaintext", "tokens", "tokens+TLS", "tokens+mTLS"):
        grpc_ms, grpc_ratio, http_ms, http_ratio = map(float, rows[setting])
        assert grpc_ms > 0 and http_ms > 0 and grpc_ratio > 0 and http_ratio > 0
    assert rows["plaintext"][1] == "1.00" and rows["plaintext"][3] == "1.00"
