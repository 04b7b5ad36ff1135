"""How the randomisation check is scored: inside a detection's box, and by |rho| for a segmenter.

Synthetic maps with a known answer: an inverted map keeps the trained map's structure (not
destroyed); a map identical outside the box but shuffled inside it is destroyed where the
detection is explained, though the whole-image rho stays high.
"""

from __future__ import annotations

import numpy as np
import pytest

from vision.types import Detection, PreprocessMeta
from vision.xai.eval_card import LIMITATION_PREFIX, card_section, limitation
from vision.xai.evaluate import Options, bootstrap_ci, summarise, wilson
from vision.xai.sanity_scoring import (
    GOAL_ABS_SPEARMAN,
    box_cells,
    compare,
    is_destroyed,
    judged_key,
    score_step,
    verdict,
)

GRID = (64, 64)
BOX = (slice(20, 36), slice(24, 40))  # 16 x 16 cells of a 64 x 64 map


def _trained(seed: int = 0) -> np.ndarray:
    """A smooth map with structure everywhere (a blurred random field plus a blob)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : GRID[0], 0 : GRID[1]]
    blob = np.exp(-((yy - 28) ** 2 + (xx - 32) ** 2) / 60.0)
    return blob + 0.3 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + 0.01 * rng.random(GRID)


def _box_mask() -> np.ndarray:
    mask = np.zeros(GRID, dtype=bool)
    mask[BOX] = True
    return mask


def test_an_inverted_map_is_not_destroyed_for_a_segmenter() -> None:
    trained = _trained()
    inverted = 1.0 - trained
    step = score_step([trained], [inverted], [None])
    assert step["spearman_mean"] == pytest.approx(-1.0)
    assert step["abs_spearman_mean"] == pytest.approx(1.0)
    assert judged_key("segmentation") == "abs_spearman_mean"
    assert not is_destroyed(step[judged_key("segmentation")])
    steps = [{"layers_randomised": 1, **step}]
    assert verdict("segmentation", steps)["goal_met"] is False


def test_noise_is_destroyed_for_a_segmenter() -> None:
    trained = _trained()
    noise = np.random.default_rng(5).random(GRID)
    step = score_step([trained], [noise], [None])
    assert is_destroyed(step["abs_spearman_mean"])
    result = verdict("segmentation", [{"layers_randomised": 1, **step}])
    assert result["goal_met"] and result["layers_until_goal"] == 1


def test_a_map_destroyed_inside_the_box_counts_as_destroyed_there() -> None:
    trained = _trained()
    other = trained.copy()
    inside = other[BOX].ravel()
    other[BOX] = np.random.default_rng(1).permutation(inside).reshape(16, 16)
    rho = compare(trained, other, _box_mask())
    assert rho["image"] > 0.8  # identical outside: the whole image still correlates
    assert abs(rho["box"]) < GOAL_ABS_SPEARMAN
    step = score_step([trained], [other], [_box_mask()])
    assert step["abs_spearman_mean"] > 0.8 and step["box_scored"] == 1
    assert is_destroyed(step[judged_key("detection")])
    assert verdict("detection", [{"layers_randomised": 1, **step}])["goal_met"]


def test_a_map_kept_inside_the_box_but_changed_outside_is_not_destroyed() -> None:
    trained = _trained()
    other = np.random.default_rng(2).random(GRID)
    other[BOX] = trained[BOX]
    step = score_step([trained], [other], [_box_mask()])
    assert step["abs_spearman_mean"] < 0.5
    assert step["box_abs_spearman_mean"] == pytest.approx(1.0)
    assert not verdict("detection", [{"layers_randomised": 1, **step}])["goal_met"]


def test_a_constant_trained_region_is_left_out_not_counted_as_destroyed() -> None:
    trained = _trained()
    trained[BOX] = 0.0
    step = score_step([trained], [np.random.default_rng(3).random(GRID)], [_box_mask()])
    assert step["box_scored"] == 0 and step["box_abs_spearman_mean"] is None
    assert not is_destroyed(step["box_abs_spearman_mean"])


def test_the_cascade_verdict_names_the_first_step_below_the_goal() -> None:
    steps = [
        {"layers_randomised": 1, "box_abs_spearman_mean": 0.7},
        {"layers_randomised": 5, "box_abs_spearman_mean": 0.35},
        {"layers_randomised": 9, "box_abs_spearman_mean": 0.1},
    ]
    result = verdict("detection", steps)
    assert result["goal_met"] is False and result["top_layer_judged"] == 0.7
    assert result["layers_until_goal"] == 9


def test_box_cells_follow_the_letterbox_to_the_cam_grid() -> None:
    # 200 x 100 image letterboxed into 128 x 128: scale 0.64, pad 32 rows top.
    meta = PreprocessMeta(100, 200, 0.64, 0.64, 0.0, 32.0, 128, 128)
    box = Detection(50.0, 25.0, 100.0, 75.0, 0.9, 0, "a")
    mask = box_cells(box, meta, (32, 32))  # stride 4
    rows, cols = np.nonzero(mask)
    assert (cols.min(), cols.max()) == (8, 15)  # x 32..64 input px -> cells 8..16
    assert (rows.min(), rows.max()) == (12, 19)  # y 16+32..48+32 -> cells 12..20
    tiny = box_cells(Detection(10.0, 10.0, 10.5, 10.5, 0.9, 0, "a"), meta, (32, 32))
    assert tiny.sum() == 4  # at least 2 x 2 cells, so a rank correlation exists
    edge = box_cells(Detection(195.0, 95.0, 200.0, 100.0, 0.9, 0, "a"), meta, (32, 32))
    assert edge.sum() >= 4 and edge[:, -1].any()


def _record(class_id: int, hit: bool, deletion: float, insertion: float) -> dict:
    curve = {"gradcam": [1.0, 0.0], "random": [1.0, 0.5]}
    return {
        "class_id": class_id,
        "deletion": {"gradcam": deletion, "random": 0.5},
        "insertion": {"gradcam": insertion, "random": 0.5},
        "deletion_curve": curve,
        "insertion_curve": curve,
        "pointing": {"gradcam": hit, "random": 0.0},
        "iou": {
            "gradcam": {"iou_threshold": 0.1, "iou_top_area": 0.2},
            "random": {"iou_threshold": 0.0, "iou_top_area": 0.0},
        },
    }


def test_summary_reports_pointing_and_deletion_insertion_per_class_with_n() -> None:
    records = [_record(0, True, 0.2, 0.8), _record(0, False, 0.4, 0.6), _record(2, True, 0.9, 0.1)]
    out = summarise(records, Options(steps=1), ["RBC", "WBC", "Platelets"])
    assert set(out["per_class"]) == {"RBC", "Platelets"}
    rbc, platelets = out["per_class"]["RBC"], out["per_class"]["Platelets"]
    assert rbc["pointing"]["n"] == 2 and rbc["pointing"]["hits"] == 1
    assert rbc["pointing"]["gradcam_hit_rate"] == pytest.approx(0.5)
    assert rbc["deletion"]["gradcam_auc"] == pytest.approx(0.3) and rbc["deletion"]["n"] == 2
    assert platelets["insertion"]["goal_met"] is False  # 0.1 < random 0.5
    assert out["pointing"]["n"] == 3 and out["pointing"]["hits"] == 2


def test_intervals() -> None:
    low, high = wilson(15, 20)
    assert low == pytest.approx(0.531, abs=1e-3) and high == pytest.approx(0.888, abs=1e-3)
    assert wilson(0, 0) is None and bootstrap_ci([]) is None
    ci = bootstrap_ci([0.2, 0.4, 0.6, 0.8])
    assert 0.2 <= ci[0] < 0.5 < ci[1] <= 0.8


def _report(goal_met: bool) -> dict:
    records = [_record(1, True, 0.2, 0.8)]
    steps = [{"layers_randomised": 1, "down_to": "head", "spearman_mean": 0.8}]
    steps[0] |= {"abs_spearman_mean": 0.8, "scored": 1}
    steps[0] |= {"box_spearman_mean": 0.1 if goal_met else 0.7, "box_scored": 1}
    steps[0]["box_abs_spearman_mean"] = abs(steps[0]["box_spearman_mean"])
    rand = {"checkpoint": "w", "targets": 1, "layers": ["head", "body"], "steps": steps}
    rand["verdict"] = verdict("detection", steps)
    return {
        "split": "test",
        "images": 1,
        "method": "hirescam",
        "target_layer": "body",
        "randomisation": rand,
        **summarise(records, Options(steps=1), ["a", "b"]),
    }


def test_the_card_says_when_and_why_the_check_fails() -> None:
    failing = card_section(_report(goal_met=False), "vision xai-eval --model m")
    assert failing["randomisation"]["goal_met"] is False
    assert failing["per_class"]["b"]["pointing"]["n"] == 1
    note = limitation(failing)
    assert note is not None and note.startswith(LIMITATION_PREFIX)
    assert "0.70 inside the explained boxes" in note and "(body)" in note
    passing = card_section(_report(goal_met=True), "vision xai-eval --model m")
    assert passing["randomisation"]["goal_met"] is True and limitation(passing) is None
