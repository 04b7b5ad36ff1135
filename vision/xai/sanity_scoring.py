"""How the model-randomisation check is scored, numpy only (Adebayo et al. 2018).

Cascading randomisation compares each target's trained map with its map after some layers are
re-initialised. What counts as "the map survived" depends on the task:

* **Detector.** A detection's map matters inside its box: the Spearman rank correlation is taken
  over the CAM cells the explained box covers (`box_cells`), and over the whole image too; both
  are reported, and the check is judged inside the box. Over the image the ranks are dominated
  by the other objects' structure, which a detector map keeps whatever the head does.
* **Segmenter.** The map is scored by |rho| over the image: a map that is inverted by the
  randomisation (rho = -0.7) still carries the image's structure and is not "destroyed".

A target whose trained map is constant over its region has no ranking to keep: its rho is
None and it is left out of the means (`scored` says how many were kept).
"""

from __future__ import annotations

import math

import numpy as np

from vision.types import Detection, PreprocessMeta
from vision.xai.faithfulness import spearman

GOAL_ABS_SPEARMAN = 0.3  # |rho| below this once the top layer is randomised (Adebayo et al.)
MIN_CELLS = 2  # a box covers at least MIN_CELLS x MIN_CELLS CAM cells


def _span(low: float, high: float, size: int) -> slice:
    """CAM cells [lo, hi) covering [low, high] in cell units, at least MIN_CELLS wide."""
    width = min(MIN_CELLS, size)
    lo = min(max(int(math.floor(low)), 0), size - width)
    hi = min(max(int(math.ceil(high)), lo + width), size)
    return slice(lo, hi)


def box_cells(detection: Detection, meta: PreprocessMeta, grid: tuple[int, int]) -> np.ndarray:
    """Boolean [h, w] mask of the CAM cells under a detection's box (original-image pixels).

    The box goes to model-input pixels (`PreprocessMeta`: scale, then letterbox pad), then to
    the CAM grid (`grid` = (h, w) over the whole model input).
    """
    height, width = grid
    fx, fy = width / meta.input_width, height / meta.input_height
    x1 = (detection.x1 * meta.scale_x + meta.pad_x) * fx
    x2 = (detection.x2 * meta.scale_x + meta.pad_x) * fx
    y1 = (detection.y1 * meta.scale_y + meta.pad_y) * fy
    y2 = (detection.y2 * meta.scale_y + meta.pad_y) * fy
    mask = np.zeros(grid, dtype=bool)
    mask[_span(y1, y2, height), _span(x1, x2, width)] = True
    return mask


def region_spearman(trained: np.ndarray, other: np.ndarray, region: np.ndarray) -> float | None:
    """Spearman rho of two maps over `region`; None when the trained map is constant there."""
    a = np.asarray(trained)[region]
    if a.size < 2 or np.ptp(a) == 0:
        return None
    return spearman(a, np.asarray(other)[region])


def compare(
    trained: np.ndarray, randomised: np.ndarray, box: np.ndarray | None
) -> dict[str, float | None]:
    """One target's rho over the image, and inside its box when it has one."""
    out: dict[str, float | None] = {
        "image": region_spearman(trained, randomised, np.ones(trained.shape, dtype=bool))
    }
    if box is not None:
        out["box"] = region_spearman(trained, randomised, box)
    return out


def _stats(values: list[float | None], prefix: str) -> dict:
    kept = [v for v in values if v is not None]
    mean = float(np.mean(kept)) if kept else None
    return {
        f"{prefix}spearman_mean": mean,
        f"{prefix}spearman_std": float(np.std(kept)) if kept else None,
        f"{prefix}abs_spearman_mean": float(np.mean(np.abs(kept))) if kept else None,
        f"{prefix}spearman": [None if v is None else round(v, 4) for v in values],
        f"{prefix}scored": len(kept),
    }


def score_step(
    trained: list[np.ndarray], randomised: list[np.ndarray], boxes: list[np.ndarray | None]
) -> dict:
    """Rho statistics of one randomisation step over every target (image; box when any)."""
    rhos = [compare(a, b, m) for a, b, m in zip(trained, randomised, boxes, strict=True)]
    out = _stats([r["image"] for r in rhos], "")
    if any(m is not None for m in boxes):
        out.update(_stats([r.get("box") for r in rhos], "box_"))
    return out


def judged_key(kind: str) -> str:
    """The statistic the check is judged on: |rho| inside the box (detector), else over the
    image (segmenter)."""
    return "box_abs_spearman_mean" if kind == "detection" else "abs_spearman_mean"


def is_destroyed(value: float | None, goal: float = GOAL_ABS_SPEARMAN) -> bool:
    """Whether a judged |rho| says the map no longer resembles the trained one."""
    return value is not None and abs(value) < goal


def verdict(kind: str, steps: list[dict], goal: float = GOAL_ABS_SPEARMAN) -> dict:
    """Pass / fail of the cascade: judged |rho| after the top layer, and the first step (number
    of layers randomised) at which it falls below the goal, if any."""
    key = judged_key(kind)
    top = steps[0].get(key) if steps else None
    first = next((s["layers_randomised"] for s in steps if is_destroyed(s.get(key), goal)), None)
    return {
        "judged_on": key,
        "goal_abs_spearman_below": goal,
        "top_layer_judged": top,
        "goal_met": is_destroyed(top, goal),
        "layers_until_goal": first,
    }
