"""Smoke run of `bench.dicom_node_floor`: the highdicom results of one photograph built, encoded
and accepted by dcmtk's storescp, and the table printed. Asserts that it runs, never a speed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.dicom_node.storescp import storescp_missing


def test_floor_bench_sends_the_three_results_and_prints_the_budget(tmp_path: Path, capsys) -> None:
    if storescp_missing():
        pytest.skip(storescp_missing())
    from bench import dicom_node_floor

    assert dicom_node_floor.main(["--repeats", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for part in dicom_node_floor.PARTS:
        assert re.search(rf"^{part}\s+\d+\.\d\s+\d+\.\d$", out, re.M), out
    assert re.search(r"^floor .* (\d+\.\d) ms against a budget of (\d+\.\d) ms", out, re.M), out
    report = json.loads((tmp_path / "floor.json").read_text())
    parts = report["parts"]
    floor = sum(parts[p]["min_ms"] for p in dicom_node_floor.PARTS if p != "infer")
    assert report["floor_ms"] == pytest.approx(floor)
    assert report["budget_ms"] == pytest.approx(parts["infer"]["min_ms"] / 9)
