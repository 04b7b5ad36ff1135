"""Image-level pass/fail operating point: false-reject and escape rates, threshold search, CIs.

A part (image) is *rejected* when its image-level score is at least the threshold. Images with
a true defect are positives, defect-free images negatives:

- escape rate: positives passed (score < threshold) / positives;
- false-reject rate: negatives rejected (score >= threshold) / negatives.

`threshold_for_escape` picks the highest threshold whose escape rate on the given scores is at
most the target (the fewest false rejects that meet it). Thresholds are chosen on validation
scores and the test scores are scored once at the chosen threshold (`operating_point`). Every
rate comes with its count, n and a Wilson 95 % interval. Plain numpy + matplotlib (no torch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vision.config import (  # noqa: E402
    InspectionRuleSpec,
    InspectionSpec,
    ModelConfig,
    load_config,
    write_config,
)
from vision.errors import ConfigError  # noqa: E402
from vision.inspection import DEFAULT_RULE_NAME, InspectionRules, Result, defect_score  # noqa: E402

Z95 = 1.959963984540054
DEFAULT_TARGET_ESCAPE = 0.01


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials ((nan, nan) when n is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> dict:
    """A rate as reported: value, count, n and Wilson 95 % interval (value nan when n is 0)."""
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else float("nan"), "k": int(k), "n": int(n), "ci95": [lo, hi]}


def _array(scores: Sequence[float]) -> np.ndarray:
    return np.asarray(scores, np.float64).reshape(-1)


def rates_at(positives: Sequence[float], negatives: Sequence[float], threshold: float) -> dict:
    """Escape and false-reject rates at `threshold` (rejected: score >= threshold)."""
    pos, neg = _array(positives), _array(negatives)
    return {
        "threshold": float(threshold),
        "escape": rate(int((pos < threshold).sum()), len(pos)),
        "false_reject": rate(int((neg >= threshold).sum()), len(neg)),
    }


def threshold_for_escape(positives: Sequence[float], target: float) -> float | None:
    """The highest threshold with escape rate <= `target` on `positives` (None: no positives).

    With positives sorted ascending, threshold = the (k+1)-th smallest score, k = floor(target *
    n), lets at most k positives escape; any higher threshold lets k+1 escape.
    """
    pos = np.sort(_array(positives))
    if not len(pos):
        return None
    k = min(int(math.floor(target * len(pos) + 1e-9)), len(pos) - 1)
    return float(pos[k])


def curve(
    positives: Sequence[float], negatives: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, escape rates, false-reject rates) over every distinct score (plus 0 and a
    threshold above the highest, where nothing is rejected)."""
    pos, neg = _array(positives), _array(negatives)
    both = np.concatenate([pos, neg, [0.0]])
    top = float(both.max()) if len(both) else 1.0
    thresholds = np.unique(np.concatenate([both, [np.nextafter(top, np.inf)]]))
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    escape = np.searchsorted(pos_sorted, thresholds, "left") / max(len(pos), 1)
    reject = 1 - np.searchsorted(neg_sorted, thresholds, "left") / max(len(neg), 1)
    return thresholds, escape, reject if len(neg) else np.full_like(escape, np.nan)


def operating_point(
    val: tuple[Sequence[float], Sequence[float]],
    test: tuple[Sequence[float], Sequence[float]] | None,
    config_threshold: float | None,
    target_escape: float = DEFAULT_TARGET_ESCAPE,
) -> dict:
    """The report section: rates at the config's threshold and at the threshold chosen on the
    validation scores for `target_escape`, on validation and (scored once) on test.

    `val` / `test`: (positive scores, negative scores); `test` None reports validation only;
    `config_threshold` None (rules with different thresholds) leaves that section out.
    """
    chosen = threshold_for_escape(val[0], target_escape)
    splits = {"val": val} | ({"test": test} if test is not None else {})
    report: dict = {
        "rule": "rejected when the image score >= threshold",
        "target_escape_rate": target_escape,
        "selected_on": "val",
        "config_threshold": config_threshold,
        "selected_threshold": chosen,
        "n": {k: {"defective": len(v[0]), "defect_free": len(v[1])} for k, v in splits.items()},
    }
    if config_threshold is not None:
        at = {k: rates_at(*v, config_threshold) for k, v in splits.items()}
        report["at_config_threshold"] = at
    if chosen is not None:
        report["at_selected_threshold"] = {k: rates_at(*v, chosen) for k, v in splits.items()}
    return report


def plot_operating_point(
    splits: dict[str, tuple[Sequence[float], Sequence[float]]],
    marks: dict[str, float | None],
    path: str | Path,
    title: str = "",
) -> Path:
    """Escape rate vs false-reject rate over thresholds, one curve per split, the `marks`
    (name -> threshold) drawn on each curve; PNG at `path`."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, (name, (pos, neg)) in enumerate(splits.items()):
        _, escape, reject = curve(pos, neg)
        ax.step(
            reject, escape, where="post", color=f"C{i}", label=f"{name} (n={len(pos)}+{len(neg)})"
        )
        for j, (label, threshold) in enumerate(marks.items()):
            if threshold is None:
                continue
            at = rates_at(pos, neg, threshold)
            marker = "os^v"[j % 4]
            ax.plot(
                at["false_reject"]["rate"],
                at["escape"]["rate"],
                marker,
                color=f"C{i}",
                label=f"{name} {label} {threshold:.3g}",
            )
    ax.set(
        xlabel="false-reject rate (good parts rejected)",
        ylabel="escape rate (defective parts passed)",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        title=title or "image-level operating point",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def image_scores(results: Sequence[Result], rules: InspectionRules) -> list[float]:
    """The image-level defect score of each result under the inspection rules
    (`vision.inspection.defect_score`: a part fails at threshold t exactly when it is >= t)."""
    return [defect_score(r, rules) for r in results]


def rules_threshold(rules: InspectionRules) -> float | None:
    """The one score threshold all rules share (None when they differ: the config's rules are
    then no single point on the curve)."""
    values = {r.image_score if r.is_image_score else r.min_score for r in rules.rules}
    return float(values.pop()) if len(values) == 1 else None


def with_threshold(config: ModelConfig, threshold: float) -> ModelConfig:
    """The config with its inspection rules set to one threshold: every rule's `min_score`
    (finding rules) or `image_score` (image-score rules); without rules, one rule any-finding
    with that `min_score` (the line's verdicts then use it)."""
    rules = config.inspection.rules or (InspectionRuleSpec(DEFAULT_RULE_NAME),)
    value = round(float(threshold), 6)
    changed = tuple(
        dataclasses.replace(r, image_score=value)
        if r.image_score is not None
        else dataclasses.replace(r, min_score=value)
        for r in rules
    )
    return dataclasses.replace(config, inspection=InspectionSpec(rules=changed))


def write_operating_point(model_dir: str | Path, section: dict) -> float:
    """Record the selected threshold of an `operating_point` report section in the model's
    config (`inspection:` rules, `with_threshold`) and card (`evaluation.operating_point`);
    returns it.
    ConfigError when the section has no selected threshold."""
    from vision.export import read_card, write_card

    threshold = section.get("selected_threshold")
    if threshold is None:
        raise ConfigError("no threshold was selected (no defective validation images)")
    model_dir = Path(model_dir)
    write_config(with_threshold(load_config(model_dir), threshold), model_dir)
    card = read_card(model_dir)
    card.setdefault("evaluation", {})["operating_point"] = section
    write_card(model_dir, card)
    return float(threshold)
