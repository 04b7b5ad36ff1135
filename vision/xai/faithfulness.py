"""Quality measures of saliency maps, numpy only (no torch, no model code).

* Deletion / insertion (Petsiuk et al. 2018, RISE): pixels are removed from the image (deletion,
  replaced by a baseline) or added to a baseline (insertion) in order of saliency, and the
  model's target score is recorded at each step; the area under that curve is the measure
  (deletion: lower is better; insertion: higher is better). A random map is the reference.
* Pointing game (Zhang et al. 2016): is the map's peak within `tolerance` pixels of the truth?
* IoU of the thresholded map with the ground-truth region.
* Spearman rank correlation of two maps (the model-randomisation check, Adebayo et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

ScoreFn = Callable[[list[np.ndarray]], np.ndarray]  # images (HxWxC) -> target scores


def step_fractions(steps: int) -> np.ndarray:
    """The fractions of pixels changed at each point of a curve: 0, 1/steps, ..., 1."""
    return np.linspace(0.0, 1.0, steps + 1)


def saliency_order(heat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most salient first; ties (flat zero regions) in random order."""
    flat = np.asarray(heat, dtype=np.float64).ravel()
    return np.lexsort((rng.random(flat.size), -flat))


def blurred(pixels: np.ndarray, sigma_fraction: float = 0.05) -> np.ndarray:
    """A strong Gaussian blur of the image (sigma = `sigma_fraction` of its shorter side)."""
    sigma = max(1.0, sigma_fraction * min(pixels.shape[:2]))
    out = cv2.GaussianBlur(pixels, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return out.reshape(pixels.shape)


def mean_image(pixels: np.ndarray) -> np.ndarray:
    """The image filled with its per-channel mean."""
    mean = pixels.reshape(-1, pixels.shape[-1]).mean(0) if pixels.ndim == 3 else pixels.mean()
    return np.broadcast_to(np.asarray(mean), pixels.shape).astype(pixels.dtype).copy()


def perturbed(
    start: np.ndarray, fill: np.ndarray, order: np.ndarray, fractions: np.ndarray
) -> list[np.ndarray]:
    """`start` with the first fraction of `order`'s pixels taken from `fill`, per fraction."""
    height, width = start.shape[:2]
    counts = np.round(fractions * height * width).astype(int)
    src = fill.reshape(height * width, -1)
    images = []
    for count in counts:
        image = start.reshape(height * width, -1).copy()
        image[order[:count]] = src[order[:count]]
        images.append(image.reshape(start.shape))
    return images


def auc(scores: np.ndarray, fractions: np.ndarray) -> float:
    """Trapezoidal area under a score curve over fractions in [0, 1]."""
    return float(np.trapezoid(np.asarray(scores, dtype=np.float64), fractions))


def deletion_insertion(
    pixels: np.ndarray,
    heat: np.ndarray,
    score: ScoreFn,
    steps: int,
    rng: np.random.Generator,
    baselines: tuple[np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """Deletion and insertion score curves (steps + 1 points each) of one map.

    `baselines`: (what deleted pixels become, what insertion starts from).
    """
    fractions = step_fractions(steps)
    order = saliency_order(heat, rng)
    deleted, inserted = baselines
    return {
        "deletion": np.asarray(score(perturbed(pixels, deleted, order, fractions))),
        "insertion": np.asarray(score(perturbed(inserted, pixels, order, fractions))),
    }


def random_heat(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A uniform random map [h, w] in [0, 1] (pass it through the same upsampling as a CAM)."""
    return rng.random(shape).astype(np.float32)


def pointing_hit(heat: np.ndarray, truth: np.ndarray, tolerance: int = 0) -> bool:
    """Whether the map's peak lies within `tolerance` pixels of a truth pixel."""
    if not truth.any():
        return False
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    if tolerance <= 0:
        return bool(truth[y, x])
    outside = (~truth.astype(bool)).astype(np.uint8)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    return bool(distance[y, x] <= tolerance)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def map_ious(heat: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """IoU with the truth of the map above `threshold`, and of its top-|truth| pixels."""
    truth = truth.astype(bool)
    area = int(truth.sum())
    top = np.zeros(heat.size, dtype=bool)
    if area:
        top[np.argsort(-heat.ravel(), kind="stable")[:area]] = True
    return {
        "iou_threshold": iou(heat > threshold, truth),
        "iou_top_area": iou(top.reshape(heat.shape), truth),
    }


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0 when either is constant (no ranking)."""
    x = ranks(np.asarray(a, dtype=np.float64).ravel())
    y = ranks(np.asarray(b, dtype=np.float64).ravel())
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else 0.0
