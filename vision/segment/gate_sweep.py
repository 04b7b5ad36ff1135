"""Choose a segmenter's `postprocess.image_score_gate` on the validation split, as served.

`python -m vision.segment.gate_sweep --model-dir models/tile-defects [--max-free-rate 0.10]`
runs the model once over val through the serving path (ONNX, Pipeline, original image size),
then scores the masks as served at every candidate gate (the val gate scores: the image
scores, or with `--gate-uses-mask-score` / the config's `gate_uses_mask_score` the mean of the
image score and the served mask's score; `vision.postprocess.gate_score`): Dice (mean
over defect images, a gated-out defect image counts 0), the defect-free mask rate and the
image AUROC, each with n and a 95 % bootstrap interval. The lowest gate whose defect-free mask
rate is at most `--max-free-rate` keeps the most Dice under that rate; every gate from it up to
the score of the first defect tile with a non-empty, overlapping mask keeps that same val Dice
and masks no more defect-free tiles. The rule `centre` (the default) takes the middle of that
span (as far as val allows from the defect-free tiles below it and the defect tiles above it:
the lowest gate sits on the edge of the defect-free scores, so unseen defect-free tiles that
score a little higher pass it); `--rule lowest` takes its low end (before session 22).
With `--confidence C` (e.g. 0.95) the rate compared is instead the one-sided Clopper-Pearson
upper bound at level C of the val rate (k of n defect-free tiles with a mask): the lowest gate
for which a rate above `--max-free-rate` on unseen tiles is unlikely, not merely the lowest
that val happens to pass (with 87 val tiles, "at most 10 %" then means at most 3 masks, not 8).
It never reads the test split; `--write` records the gate (and the rule) in config.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vision.segment.evaluate import compute_metrics, load_samples, predict
from vision.segment.metrics import dice_iou, gate_scores, served_masks


def candidate_gates(scores: list[float]) -> list[float]:
    """0 (no gate) and every distinct image score, ascending."""
    return sorted({0.0, *(float(s) for s in scores)})


def rate_upper_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound at level `confidence` of a rate seen k times in n."""
    from scipy.stats import beta

    if k >= n:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n - k))


def lowest_gate(
    scores: list[float],
    fired: list[bool],
    free: list[bool],
    max_rate: float,
    confidence: float | None = None,
) -> float:
    """The lowest gate at which masks stay on at most `max_rate` of the defect-free images
    (`fired`: the ungated served mask is not empty) — with `confidence`, at which the
    Clopper-Pearson upper bound of that share is at most `max_rate`; 1.0 when no gate gets
    there."""
    s, on, clean = np.asarray(scores), np.asarray(fired), np.asarray(free)
    n = int(clean.sum())
    for gate in candidate_gates(scores):
        k = int((on & (s >= gate))[clean].sum())
        rate = k / max(n, 1) if confidence is None else rate_upper_bound(k, n, confidence)
        if rate <= max_rate:
            return gate
    return 1.0


RULES = ("centre", "lowest")


def span_top(scores: list[float], dice: list[float | None], low: float) -> float | None:
    """The upper end of the span of gates from `low` that keeps the same val Dice: the lowest
    score at or above `low` of a defect image whose ungated mask scores Dice > 0 (`dice`:
    None for a defect-free image); None when there is no such image."""
    above = [s for s, d in zip(scores, dice, strict=True) if d and s >= low]
    return min(above) if above else None


def centred_gate(scores: list[float], dice: list[float | None], low: float) -> float:
    """The middle of the span from `low` to `span_top`; `low` itself when the span has no
    upper end that val can see, or `low` is 1.0 (no gate was found)."""
    top = span_top(scores, dice, low)
    return low if low >= 1.0 or top is None else (low + top) / 2


def sweep(
    model_dir: Path,
    root: Path | None,
    max_rate: float,
    version: int = 0,
    uses_mask: bool | None = None,
    confidence: float | None = None,
    rule: str = "centre",
) -> dict:
    """Val predictions once, the metrics at the chosen gate and without one (`uses_mask`:
    the gate rule, default the config's `gate_uses_mask_score`; `confidence`: compare the
    rate's upper bound, `lowest_gate`; `rule`: `centred_gate` or the lowest gate itself)."""
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: one of {', '.join(RULES)}")
    from vision.datasets.locations import dataset_dir
    from vision.export import read_card
    from vision.loader import load_model
    from vision.segment.model import RECIPES, Recipe

    card = read_card(model_dir)
    recipe = RECIPES.get(model_dir.name) or Recipe(**card["recipe"])
    model = load_model(model_dir, version, explain=False)
    samples = load_samples(
        recipe, root or dataset_dir(recipe.dataset, None), "val", model_dir / "splits.json"
    )
    predictions = predict(model, samples)
    if predictions.image_scores is None:
        raise SystemExit(f"{model_dir}: the config names no image_score_output; nothing to gate")
    regions = model.config.postprocess.max_regions
    if uses_mask is None:
        uses_mask = model.config.postprocess.gate_uses_mask_score
    served = served_masks(predictions.probs, regions)
    fired = [bool(p.any()) for p in served]
    free = [not s.mask.any() for s in samples]
    scores = gate_scores(predictions.probs, served, predictions.image_scores, uses_mask)
    low = lowest_gate(scores, fired, free, max_rate, confidence)
    pairs = zip(free, served, samples, strict=True)
    dice = [None if f else dice_iou(p > 0, s.mask > 0)[0] for f, p, s in pairs]
    span = {"lowest": low, "highest": span_top(scores, dice, low)}
    span["centre"] = centred_gate(scores, dice, low)
    gate = span["centre"] if rule == "centre" else low

    def at(g: float) -> dict:
        m = compute_metrics(recipe, predictions, samples, regions, g, uses_mask)
        keys = (
            "dice",
            "dice_ci",
            "auroc",
            "auroc_ci",
            "mask_fp_image_rate",
            "mask_fp_image_rate_ci",
            "images",
            "defect_images",
            "defect_free_images",
        )
        return {"image_score_gate": g, "gate_uses_mask_score": uses_mask, **{k: m[k] for k in keys}}

    chosen = at(gate)
    k = round(chosen["mask_fp_image_rate"] * chosen["defect_free_images"])
    bound = rate_upper_bound(k, chosen["defect_free_images"], confidence or 0.95)
    chosen["mask_fp_image_rate_upper_bound"] = {"confidence": confidence or 0.95, "bound": bound}
    given = {"rule": rule, "max_free_rate": max_rate, "confidence": confidence, "span": span}
    return {"split": "val", **given, "chosen": chosen, "lowest": at(low), "ungated": at(0.0)}


def main(argv: list[str] | None = None) -> int:
    """Print the sweep as JSON; with --write, set the chosen gate in the model's config.yaml."""
    p = argparse.ArgumentParser(prog="python -m vision.segment.gate_sweep")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--data", type=Path, help="dataset folder (default: the shared datasets)")
    p.add_argument("--max-free-rate", type=float, default=0.10)
    p.add_argument(
        "--confidence",
        type=float,
        help="compare the rate's one-sided Clopper-Pearson upper bound at this level (e.g. 0.95)"
        " instead of the val rate itself",
    )
    p.add_argument("--version", type=int, default=0)
    p.add_argument(
        "--rule",
        choices=RULES,
        default="centre",
        help="centre: the middle of the gates that keep the lowest gate's val Dice (default);"
        " lowest: the lowest gate within --max-free-rate",
    )
    p.add_argument(
        "--gate-uses-mask-score",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gate on the mean of the image score and the mask's score (default: the config's)",
    )
    p.add_argument("--write", action="store_true", help="record the gate in config.yaml")
    a = p.parse_args(argv)
    result = sweep(
        a.model_dir,
        a.data,
        a.max_free_rate,
        a.version,
        a.gate_uses_mask_score,
        a.confidence,
        a.rule,
    )
    print(json.dumps(result, indent=1, default=float))
    if a.write:
        import dataclasses

        from vision.config import load_config, write_config

        config = load_config(a.model_dir)
        chosen = result["chosen"]
        post = dataclasses.replace(
            config.postprocess,
            image_score_gate=float(chosen["image_score_gate"]),
            gate_uses_mask_score=bool(chosen["gate_uses_mask_score"]),
        )
        write_config(dataclasses.replace(config, postprocess=post), a.model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
