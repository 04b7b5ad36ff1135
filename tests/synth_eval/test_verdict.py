"""The paired experiment's verdicts: a baseline is trained once its val Dice stops rising; the
goal needs the rare-class gain and no rise in defect-free false positives."""

from __future__ import annotations

from vision.synth_eval.verdict import goal, plateau, trained


def test_a_curve_still_rising_in_its_last_third_is_not_trained() -> None:
    assert not plateau([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])["trained"]
    flat = plateau([0.1, 0.3, 0.40, 0.41, 0.405, 0.409])
    assert flat["trained"] and flat["best_in_last_third"] == 0.409
    assert not plateau([0.1, 0.2])["trained"], "two points cannot show a plateau"


def test_trained_needs_every_seed() -> None:
    runs = [
        {"settings": {"budget": {"seed": 0}}, "val_curve": [0.1, 0.4, 0.4, 0.4]},
        {"settings": {"budget": {"seed": 1}}, "val_curve": [0.1, 0.2, 0.3, 0.5]},
    ]
    found = trained(runs)
    assert found["per_seed"]["0"]["trained"] and not found["trained"]


def _summary(gain: float, fp_base: float, fp_synth: float) -> dict:
    arms = {
        "baseline": {"free_fp_image_rate": {"mean": fp_base}},
        "synthetic": {"free_fp_image_rate": {"mean": fp_synth}},
    }
    return {"arms": arms, "relative_gain": {"rare mean": gain}}


def test_goal_needs_the_gain_and_no_more_false_positives() -> None:
    assert goal(_summary(0.25, 0.3, 0.3), ("Fray", "Crack"))["met"]
    assert not goal(_summary(0.25, 0.3, 0.35), ("Fray", "Crack"))["met"]
    assert not goal(_summary(0.15, 0.3, 0.2), ("Fray", "Crack"))["met"]


def test_goal_judges_the_operating_point_when_every_arm_has_it() -> None:
    """At the arms' val-chosen gate the gain and false positives judged are those at the gate;
    a summary without them falls back on the ungated figures."""
    at = "@ val gate"
    summary = _summary(0.1, 0.3, 0.9)  # ungated: no gain, and more false positives
    for arm, fp in (("baseline", 0.10), ("synthetic", 0.08)):
        summary["arms"][arm][f"free_fp_image_rate {at}"] = {"mean": fp}
    summary["relative_gain"][f"rare mean {at}"] = 0.4
    judged = goal(summary, ("Fray", "Crack"), at)
    assert judged["met"] and judged["rare_gain"] == 0.4
    assert judged["free_fp_image_rate"] == {"baseline": 0.10, "synthetic": 0.08}
    assert not goal(_summary(0.1, 0.3, 0.9), ("Fray", "Crack"), at)["met"]  # falls back
