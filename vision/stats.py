"""Confidence intervals for evaluation figures: percentile bootstrap over images (numpy only).

Every figure a model card shows carries its n and a 95 % interval; these are the helpers that
make them. Resampling is over images (the unit a user's data varies by), seeded, 2,000 draws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

BOOTSTRAP_DRAWS = 2000


def mean_ci(values: list[float], seed: int = 0) -> dict[str, Any]:
    """Mean, n and the 95 % percentile bootstrap interval of the finite `values`."""
    x = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if not len(x):
        return {"value": float("nan"), "n": 0, "ci95": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (BOOTSTRAP_DRAWS, len(x)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"value": float(x.mean()), "n": int(len(x)), "ci95": [float(low), float(high)]}


def rate_ci(flags: list[bool], seed: int = 0) -> dict[str, Any]:
    """A proportion (share of True), n and its 95 % bootstrap interval."""
    return mean_ci([float(f) for f in flags], seed)


def paired_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    truth: np.ndarray,
    scores: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """`statistic(truth, scores)` (e.g. AUROC), n and its 95 % bootstrap interval over images;
    draws without both classes are skipped."""
    truth, scores = np.asarray(truth), np.asarray(scores, np.float64)
    if len(truth) == 0 or truth.all() or not truth.any():
        return {"value": float("nan"), "n": int(len(truth)), "ci95": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP_DRAWS):
        pick = rng.integers(0, len(truth), len(truth))
        if truth[pick].any() and not truth[pick].all():
            draws.append(statistic(truth[pick], scores[pick]))
    low, high = np.percentile(draws, [2.5, 97.5])
    value = float(statistic(truth, scores))
    return {"value": value, "n": int(len(truth)), "ci95": [float(low), float(high)]}
