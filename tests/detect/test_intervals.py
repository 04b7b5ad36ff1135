"""Detection figures with intervals: the point estimates equal the plain metrics."""

from __future__ import annotations

import numpy as np

from vision.detect.intervals import detection_figures
from vision.detect.metrics import Boxes, ap_per_class, f_score


def _scene(seed: int, images: int = 30) -> tuple[list[Boxes], list[Boxes]]:
    rng = np.random.default_rng(seed)
    preds, truths = [], []
    for _ in range(images):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(10, 40, (n, 2))]).astype(np.float32)
        labels = rng.integers(0, 3, n)
        difficult = rng.random(n) < 0.15
        truths.append(Boxes.truth(boxes, labels, difficult))
        keep = rng.random(n) < 0.8
        jitter = rng.normal(0, 4, boxes.shape).astype(np.float32)
        extra = np.hstack([xy[:1] + 50, xy[:1] + 80]).astype(np.float32)
        pb = np.vstack([(boxes + jitter)[keep], extra])
        pl = np.concatenate([labels[keep], rng.integers(0, 3, 1)])
        preds.append(Boxes(pb, pl, rng.uniform(0.05, 1, len(pl)).astype(np.float32)))
    return preds, truths


def test_point_estimates_equal_the_plain_metrics_and_intervals_hold_them() -> None:
    preds, truths = _scene(0)
    labels = ("a", "b", "c")
    figures = detection_figures(preds, truths, labels, 0.3)
    ap = ap_per_class(preds, truths, 3, 0.5)
    for c, name in enumerate(labels):
        fig = figures[f"AP50_{name}"]
        assert abs(fig["value"] - ap[c]) < 1e-9 and fig["n"] == 30 and fig["instances"] > 0
        assert fig["ci95"][0] <= fig["value"] <= fig["ci95"][1]
    assert abs(figures["mAP50"]["value"] - float(np.mean(ap))) < 1e-9
    f1 = f_score(preds, truths, 3, 0.5, 0.3)["f_score"]
    assert abs(figures["F1_at_threshold"]["value"] - f1) < 1e-9
    strict = np.mean([ap_per_class(preds, truths, 3, t).mean() for t in np.arange(0.5, 0.96, 0.05)])
    assert abs(figures["mAP50_95"]["value"] - strict) < 1e-9
    low, high = figures["mAP50"]["ci95"]
    assert 0 < high - low < 0.5


def test_an_absent_class_has_no_figure() -> None:
    preds, truths = _scene(1)
    truths = [Boxes.truth(t.boxes[t.labels != 2], t.labels[t.labels != 2]) for t in truths]
    figures = detection_figures(preds, truths, ("a", "b", "c"), 0.3)
    assert "AP50_c" not in figures and "AP50_a" in figures
    ap = ap_per_class(preds, truths, 3, 0.5)
    assert abs(figures["mAP50"]["value"] - float(np.nanmean(ap))) < 1e-9
