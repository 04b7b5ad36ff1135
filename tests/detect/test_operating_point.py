"""Image-level operating point: rates, threshold search, Wilson CIs, the config rules it writes,
the eval report section (fast, no dataset) and a DeepPCB smoke test (skips without the data)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from vision.config import InspectionRuleSpec, load_config
from vision.inspection import InspectionRules, defect_score
from vision.operating_point import (
    curve,
    operating_point,
    plot_operating_point,
    rates_at,
    threshold_for_escape,
    wilson,
    with_threshold,
)
from vision.paths import datasets_root
from vision.types import Detection, DetectionResult

ROOT = Path(__file__).resolve().parents[2]


def test_wilson_matches_known_values() -> None:
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.16113, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.23659, abs=1e-4), pytest.approx(0.76341, abs=1e-4))
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_rates_at_a_threshold() -> None:
    pos = [0.1, 0.4, 0.5, 0.9]  # defective
    neg = [0.0, 0.2, 0.45, 0.6, 0.7]  # defect-free
    r = rates_at(pos, neg, 0.45)
    assert (r["escape"]["k"], r["escape"]["n"]) == (2, 4)  # 0.1 and 0.4 pass
    assert (r["false_reject"]["k"], r["false_reject"]["n"]) == (3, 5)  # 0.45, 0.6, 0.7 rejected
    assert r["escape"]["rate"] == 0.5 and r["false_reject"]["rate"] == 0.6


def test_threshold_for_escape_is_the_highest_meeting_the_target() -> None:
    pos = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    assert threshold_for_escape(pos, 0.0) == 0.01
    assert threshold_for_escape(pos, 0.05) == pytest.approx(0.06)  # 5 of 100 escape
    assert rates_at(pos, [], 0.06)["escape"]["k"] == 5
    assert rates_at(pos, [], np.nextafter(0.06, 1))["escape"]["k"] == 6
    assert threshold_for_escape(pos, 0.049) == pytest.approx(0.05)  # 4 escape
    assert threshold_for_escape([], 0.01) is None


def test_curve_runs_from_reject_all_to_pass_all() -> None:
    thresholds, escape, reject = curve([0.3, 0.8], [0.1, 0.5])
    assert escape[0] == 0.0 and reject[0] == 1.0
    assert escape[-1] == 1.0 and reject[-1] == 0.0
    assert np.all(np.diff(thresholds) > 0)


def test_operating_point_selects_on_val_and_scores_test_once(tmp_path: Path) -> None:
    val = ([0.2, 0.5, 0.6, 0.9], [0.1, 0.3, 0.55])
    test = ([0.15, 0.7, 0.8], [0.05, 0.65])
    section = operating_point(val, test, config_threshold=0.25, target_escape=0.25)
    assert section["selected_threshold"] == 0.5  # val: one of four may escape
    sel = section["at_selected_threshold"]
    assert sel["test"]["escape"]["k"] == 1 and sel["test"]["false_reject"]["k"] == 1
    cfg = section["at_config_threshold"]["val"]
    assert cfg["escape"]["k"] == 1 and cfg["false_reject"]["k"] == 2
    path = plot_operating_point({"val": val, "test": test}, {"selected": 0.5}, tmp_path / "op.png")
    assert path.stat().st_size > 1000


def test_with_threshold_writes_rules_the_inspection_module_uses() -> None:
    config = load_config(ROOT / "models" / "pcb-defects")
    changed = with_threshold(config, 0.7)
    assert changed.inspection.rules == (InspectionRuleSpec("any-finding", min_score=0.7),)
    rules = InspectionRules.from_config(changed)
    low = DetectionResult([Detection(0, 0, 5, 5, 0.6, 0, "open")])
    high = DetectionResult([Detection(0, 0, 5, 5, 0.72, 0, "open")])
    assert rules.rules[0].min_score == 0.7
    assert defect_score(low, rules) == pytest.approx(0.6)
    assert defect_score(high, rules) >= rules.rules[0].min_score


def _deeppcb() -> Path:
    root = datasets_root() / "deeppcb"
    if not (root / "PCBData" / "test.txt").is_file():
        pytest.skip(f"DeepPCB not found at {root} (set VISION_DATASETS to the shared datasets)")
    return root


def test_eval_report_has_the_operating_point_section(tmp_path: Path) -> None:
    """A real eval on 4 DeepPCB images; the config written by --write-operating-point."""
    _deeppcb()
    from vision.detect.cli import evaluate

    repo = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "pcb-defects", repo / "pcb-defects")
    out = tmp_path / "report"
    argv = ["--model", "pcb-defects", "--repo", str(repo), "--limit", "4", "--out", str(out)]
    assert evaluate([*argv, "--write-operating-point", "--target-escape-rate", "0.25"]) == 0
    report = json.loads((out / "report.json").read_text())
    section = report["operating_point"]
    assert section["n"] == {
        "val": {"defective": 4, "defect_free": 4},
        "test": {"defective": 4, "defect_free": 4},
    }
    assert "templates" in section["negatives"]
    assert set(section["at_selected_threshold"]) == {"val", "test"}
    assert (out / section["plot"]).is_file()
    config = load_config(repo / "pcb-defects")
    assert config.inspection.rules[0].min_score == pytest.approx(
        section["selected_threshold"], abs=1e-6
    )
    card = json.loads((repo / "pcb-defects" / "card.json").read_text())
    assert (
        card["evaluation"]["operating_point"]["selected_threshold"] == section["selected_threshold"]
    )
