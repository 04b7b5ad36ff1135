"""What the paired experiment concludes: whether the baseline was trained, and whether the
synthetic arm's gain on the rare classes holds without raising the defect-free false positives.

"Trained" (segmentation): the baseline's validation Dice (the recipe's val split, never
test) has stopped rising: the best value over the last third of its validated epochs is no
more than `PLATEAU_TOLERANCE` above the best before them, in every seed. The schedule is a
cosine over the step budget, so at two thirds of it the learning rate is still a quarter of
its peak: a network still learning keeps rising there.
"""

from __future__ import annotations

import numpy as np

PLATEAU_TOLERANCE = 0.01  # Dice
GOAL_GAIN = 0.20  # relative gain of the rare classes' mean
FREE_FP = "free_fp_image_rate"
RARE_MEAN = "rare mean"


def plateau(curve: list[float], tolerance: float = PLATEAU_TOLERANCE) -> dict:
    """Whether a validation curve has stopped rising (see the module doc); needs 3 points."""
    values = [float(v) for v in curve if v is not None and np.isfinite(v)]
    if len(values) < 3:
        return {"trained": False, "why": f"{len(values)} validated epochs: too few to tell"}
    cut = len(values) - max(1, len(values) // 3)
    before, tail = max(values[:cut]), max(values[cut:])
    return {
        "trained": bool(tail <= before + tolerance),
        "best_before_last_third": round(before, 4),
        "best_in_last_third": round(tail, 4),
        "epochs": len(values),
    }


def trained(runs: list[dict]) -> dict:
    """The baseline's plateau test per seed (runs without a `val_curve`: not judged)."""
    per_seed = {
        str(r["settings"]["budget"]["seed"]): plateau(r["val_curve"])
        for r in runs
        if "val_curve" in r
    }
    return {
        "rule": f"baseline validation Dice: best over the last third of validated epochs <= "
        f"best before it + {PLATEAU_TOLERANCE}, every seed",
        "per_seed": per_seed,
        "trained": bool(per_seed) and all(v["trained"] for v in per_seed.values()),
    }


def goal(summary: dict, rare: tuple[str, ...]) -> dict:
    """Issue 20's goal: the rare classes' mean gains >= +20 % and the defect-free false-positive
    image rate does not rise (synthetic mean <= baseline mean)."""
    gain = summary["relative_gain"].get(RARE_MEAN)
    arms = summary["arms"]
    fp = {arm: arms[arm][FREE_FP]["mean"] for arm in arms if FREE_FP in arms[arm]}
    fp_ok = len(fp) == 2 and fp["synthetic"] <= fp["baseline"]
    return {
        "rule": f"relative gain of '{RARE_MEAN}' ({' + '.join(rare)}) >= +{GOAL_GAIN:.0%} and "
        f"{FREE_FP} of the synthetic arm <= the baseline's (means over seeds)",
        "rare_gain": gain,
        "free_fp_image_rate": fp,
        "met": bool(gain is not None and gain >= GOAL_GAIN and fp_ok),
    }
