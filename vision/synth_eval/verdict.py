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


def goal(summary: dict, rare: tuple[str, ...], suffix: str = "") -> dict:
    """Issue 20's goal: the rare classes' mean gains >= +20 % and the defect-free false-positive
    image rate does not rise (synthetic mean <= baseline mean). With `suffix` (the arms'
    operating point, `vision.synth_eval.arms.AT_GATE`) the figures at that point are judged
    when every arm has them."""
    arms = summary["arms"]
    keys = (f"{RARE_MEAN} {suffix}", f"{FREE_FP} {suffix}") if suffix else (RARE_MEAN, FREE_FP)
    has_gated = keys[0] in summary["relative_gain"] and all(keys[1] in arms[a] for a in arms)
    if suffix and not has_gated:
        keys = (RARE_MEAN, FREE_FP)
    rare_key, fp_key = keys
    gain = summary["relative_gain"].get(rare_key)
    fp = {arm: arms[arm][fp_key]["mean"] for arm in arms if fp_key in arms[arm]}
    fp_ok = len(fp) == 2 and fp["synthetic"] <= fp["baseline"]
    return {
        "rule": f"relative gain of '{rare_key}' ({' + '.join(rare)}) >= +{GOAL_GAIN:.0%} and "
        f"'{fp_key}' of the synthetic arm <= the baseline's (means over seeds)",
        "rare_gain": gain,
        "free_fp_image_rate": fp,
        "met": bool(gain is not None and gain >= GOAL_GAIN and fp_ok),
    }
