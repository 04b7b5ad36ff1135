"""Inspection rules: the config section, `judge` and `defect_score`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vision.config import load_config, parse_config
from vision.errors import ConfigError
from vision.inspection import (
    DEFAULT_RULE_NAME,
    InspectionRules,
    RuleHit,
    defect_score,
    judge,
)
from vision.types import ClassMask, Detection, DetectionResult, SegmentationResult

MODELS = Path(__file__).resolve().parents[2] / "models"


def _det_config(inspection: object = None) -> dict:
    data = {
        "name": "pcb",
        "task": "detection",
        "labels": ["open", "short", "spur"],
        "postprocess": {"type": "yolov8", "score_threshold": 0.3},
    }
    if inspection is not None:
        data["inspection"] = inspection
    return data


def _seg_config(inspection: object = None, scored: bool = True) -> dict:
    post = {"type": "sigmoid", "score_threshold": 0.4}
    if scored:
        post["image_score_output"] = "defect_score"
    data = {"name": "tile", "task": "segmentation", "labels": ["crack", "blowhole"]}
    data["postprocess"] = post
    if inspection is not None:
        data["inspection"] = inspection
    return data


def _rules(data: dict) -> InspectionRules:
    return InspectionRules.from_config(parse_config(data))


def _box(x1: float, y1: float, x2: float, y2: float, score: float, label: str) -> Detection:
    class_id = ["open", "short", "spur"].index(label)
    return Detection(x1, y1, x2, y2, score=score, class_id=class_id, label=label)


def _mask(label: str, score: float, rows: slice, cols: slice) -> ClassMask:
    pixels = np.zeros((100, 100), bool)
    pixels[rows, cols] = True
    return ClassMask(
        class_id=["crack", "blowhole"].index(label), label=label, mask=pixels, score=score
    )


def test_absent_section_is_one_rule_any_finding_at_the_score_threshold() -> None:
    rules = _rules(_det_config())
    assert [r.name for r in rules.rules] == [DEFAULT_RULE_NAME]
    assert rules.rules[0].min_score == pytest.approx(0.3)
    assert judge(DetectionResult([]), rules) == []
    hits = judge(DetectionResult([_box(0, 0, 10, 10, 0.31, "spur")]), rules)
    assert hits == [RuleHit(DEFAULT_RULE_NAME, "spur", pytest.approx(0.31), 100)]
    assert judge(DetectionResult([_box(0, 0, 10, 10, 0.29, "spur")]), rules) == []


def test_bundled_model_configs_stay_valid_with_the_default_rule() -> None:
    configs = sorted(MODELS.glob("*/config.yaml"))
    assert configs, "no bundled model configs found"
    for path in configs:
        config = load_config(path.parent)
        assert InspectionRules.from_config(config).rules


def test_class_rule_fires_once_with_its_strongest_finding() -> None:
    rules = _rules(
        _det_config({"rules": [{"name": "defect", "classes": ["open", "short"], "min_score": 0.5}]})
    )
    result = DetectionResult(
        [
            _box(0, 0, 10, 10, 0.6, "open"),
            _box(20, 20, 30, 40, 0.8, "short"),
            _box(0, 0, 50, 50, 0.99, "spur"),  # not one of the rule's classes
        ]
    )
    assert judge(result, rules) == [RuleHit("defect", "short", pytest.approx(0.8), 200)]
    assert judge(DetectionResult([_box(0, 0, 10, 10, 0.99, "spur")]), rules) == []


def test_detection_roi_takes_the_box_centre_and_area_the_box_area() -> None:
    rule = {"name": "centre", "roi": [50, 50, 100, 100], "min_area_px": 50}
    rules = _rules(_det_config({"rules": [rule]}))
    inside = _box(60, 60, 70, 70, 0.9, "open")  # centre (65, 65), area 100
    outside = _box(0, 0, 40, 40, 0.9, "open")  # centre (20, 20)
    straddling = _box(30, 30, 80, 80, 0.9, "open")  # centre (55, 55): inside
    tiny = _box(60, 60, 65, 65, 0.9, "open")  # area 25 < 50
    assert judge(DetectionResult([outside, tiny]), rules) == []
    assert [h.pixel_area for h in judge(DetectionResult([inside]), rules)] == [100]
    assert judge(DetectionResult([straddling]), rules)[0].pixel_area == 2500


def test_segmentation_area_counts_mask_pixels_inside_the_roi() -> None:
    rule = {"name": "edge", "classes": ["crack"], "roi": [0, 0, 50, 100], "min_area_px": 100}
    rules = _rules(_seg_config({"rules": [rule]}))
    # 20 x 20 mask, half of it (10 columns) inside x < 50: 200 pixels inside
    half = _mask("crack", 0.9, slice(10, 30), slice(40, 60))
    hits = judge(SegmentationResult([half]), rules)
    assert hits == [RuleHit("edge", "crack", pytest.approx(0.9), 200)]
    far = _mask("crack", 0.9, slice(10, 30), slice(60, 80))  # all of it at x >= 60
    assert judge(SegmentationResult([far]), rules) == []
    small = _mask("crack", 0.9, slice(10, 15), slice(0, 10))  # 50 pixels inside < 100
    assert judge(SegmentationResult([small]), rules) == []


def test_an_empty_mask_never_fires_even_with_min_area_zero() -> None:
    rules = _rules(_seg_config())
    empty = ClassMask(class_id=0, label="crack", mask=np.zeros((8, 8), bool), score=0.9)
    assert judge(SegmentationResult([empty]), rules) == []


def test_image_score_rule_fires_at_its_threshold() -> None:
    rules = _rules(_seg_config({"rules": [{"name": "image-score", "image_score": 0.7}]}))
    assert judge(SegmentationResult([], image_score=0.69), rules) == []
    assert judge(SegmentationResult([], image_score=0.7), rules) == [
        RuleHit("image-score", "", pytest.approx(0.7), 0)
    ]
    assert judge(SegmentationResult([], image_score=None), rules) == []


def test_several_rules_give_one_hit_each() -> None:
    rules = _rules(
        _seg_config(
            {
                "rules": [
                    {"name": "crack", "classes": ["crack"]},
                    {"name": "image", "image_score": 0.5},
                ]
            }
        )
    )
    result = SegmentationResult([_mask("crack", 0.8, slice(0, 5), slice(0, 5))], image_score=0.9)
    assert [h.rule for h in judge(result, rules)] == ["crack", "image"]


def test_defect_score_leaves_out_the_threshold_but_keeps_class_and_roi() -> None:
    rule = {"name": "d", "classes": ["open"], "min_score": 0.9, "roi": [0, 0, 50, 50]}
    rules = _rules(_det_config({"rules": [rule]}))
    result = DetectionResult(
        [
            _box(0, 0, 10, 10, 0.4, "open"),  # counts (below min_score, yet still the score)
            _box(0, 0, 10, 10, 0.95, "short"),  # other class
            _box(80, 80, 90, 90, 0.97, "open"),  # outside the ROI
        ]
    )
    assert defect_score(result, rules) == pytest.approx(0.4)
    assert defect_score(DetectionResult([]), rules) == 0.0


def test_at_threshold_makes_judge_agree_with_defect_score() -> None:
    rules = _rules(
        _seg_config(
            {
                "rules": [
                    {"name": "crack", "classes": ["crack"]},
                    {"name": "image", "image_score": 0.9},
                ]
            }
        )
    )
    result = SegmentationResult([_mask("crack", 0.55, slice(0, 5), slice(0, 5))], image_score=0.62)
    score = defect_score(result, rules)
    assert score == pytest.approx(0.62)
    for threshold in (0.3, 0.55, 0.6, 0.62, 0.7):
        fails = bool(judge(result, rules.at_threshold(threshold)))
        assert fails == (score >= threshold), threshold


@pytest.mark.parametrize(
    ("inspection", "message"),
    [
        ({"rules": [{"classes": ["open"]}]}, "name"),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, "used twice"),
        ({"rules": [{"name": "a", "classes": ["pad"]}]}, "not in labels"),
        ({"rules": [{"name": "a", "min_score": 1.5}]}, "min_score"),
        ({"rules": [{"name": "a", "min_area_px": -1}]}, "min_area_px"),
        ({"rules": [{"name": "a", "roi": [10, 10, 5, 20]}]}, "x1 < x2"),
        ({"rules": [{"name": "a", "roi": [1, 2, 3]}]}, "x1, y1, x2, y2"),
        ({"rules": [{"name": "a", "colour": "red"}]}, "unknown key"),
        ({"rules": [{"name": "a", "image_score": 0.5}]}, "image_score_output"),
        ({"rules": "defect"}, "expected a list"),
        ({"rule": []}, "unknown key"),
        (["defect"], "expected a mapping"),
    ],
)
def test_bad_inspection_sections_say_what_to_fix(inspection: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_det_config(inspection))


def test_image_score_rule_takes_no_finding_conditions() -> None:
    bad = {"rules": [{"name": "a", "image_score": 0.5, "classes": ["crack"]}]}
    with pytest.raises(ConfigError, match="separate rule"):
        parse_config(_seg_config(bad))


def test_rules_survive_a_config_round_trip(tmp_path: Path) -> None:
    from vision.config import write_config

    config = parse_config(
        _det_config({"rules": [{"name": "d", "classes": ["open"], "roi": [0, 0, 5, 5]}]})
    )
    write_config(config, tmp_path / "pcb")
    again = load_config(tmp_path / "pcb")
    assert again.inspection == config.inspection
    plain = parse_config(_det_config())
    write_config(plain, tmp_path / "plain")
    assert load_config(tmp_path / "plain").inspection.rules == ()
