"""Pass/fail inspection of one image's result under the rules of its model's config.

A frame FAILS when any rule fires (`judge`). The rules come from the config's `inspection:`
section (`vision.config.InspectionSpec`); without one, the single rule `any-finding` fails a
frame on any finding at the postprocess score threshold. `defect_score` gives one image-level
score under the same rules (the operating point of `vision eval` sweeps a threshold over it).

Torch-free and wire-free: the streaming path in `serving/` and offline evaluation both use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from vision.config import InspectionRuleSpec, ModelConfig
from vision.types import ClassMask, Detection, DetectionResult, SegmentationResult

DEFAULT_RULE_NAME = "any-finding"

Result = DetectionResult | SegmentationResult


@dataclass(frozen=True)
class Rule:
    """One resolved rule: `min_score` is concrete (the config's default applied).

    A finding rule (`image_score` None) fires on a finding whose label is in `classes` (every
    class when empty), score >= `min_score`, area >= `min_area_px` (detection: box area, with
    the box centre inside `roi`; segmentation: mask pixels inside `roi`, at least one). An
    image-score rule fires when the result's image-level score is >= `image_score`.
    """

    name: str
    classes: tuple[str, ...] = ()
    min_score: float = 0.0
    min_area_px: int = 0
    roi: tuple[float, float, float, float] | None = None
    image_score: float | None = None

    @property
    def is_image_score(self) -> bool:
        """Whether the rule looks at the model's image-level score, not at findings."""
        return self.image_score is not None


@dataclass(frozen=True)
class RuleHit:
    """A rule that fired, with the strongest finding that fired it ('' label: image score)."""

    rule: str
    label: str
    score: float
    pixel_area: int = 0


@dataclass(frozen=True)
class InspectionRules:
    """The rules of one model; a frame fails when any of them fires."""

    rules: tuple[Rule, ...]

    @classmethod
    def from_config(cls, config: ModelConfig) -> InspectionRules:
        """The config's rules (already validated by `vision.config`), or the default rule."""
        threshold = float(config.postprocess.score_threshold)
        specs = config.inspection.rules
        if not specs:
            return cls((Rule(DEFAULT_RULE_NAME, min_score=threshold),))
        return cls(tuple(_resolve(spec, threshold) for spec in specs))

    def at_threshold(self, threshold: float) -> InspectionRules:
        """The same rules with every score threshold (finding and image score) set to one value."""
        return InspectionRules(tuple(_with_threshold(rule, threshold) for rule in self.rules))


def _resolve(spec: InspectionRuleSpec, default_score: float) -> Rule:
    roi = tuple(float(v) for v in spec.roi) if spec.roi is not None else None
    return Rule(
        name=spec.name,
        classes=tuple(spec.classes),
        min_score=default_score if spec.min_score is None else float(spec.min_score),
        min_area_px=int(spec.min_area_px),
        roi=roi,  # type: ignore[arg-type]  # four numbers, checked by the config
        image_score=None if spec.image_score is None else float(spec.image_score),
    )


def _with_threshold(rule: Rule, threshold: float) -> Rule:
    if rule.is_image_score:
        return dataclasses.replace(rule, image_score=threshold)
    return dataclasses.replace(rule, min_score=threshold)


def judge(result: Result, rules: InspectionRules) -> list[RuleHit]:
    """The rules that fire on `result`, one hit each (empty list: the frame passes)."""
    hits = []
    for rule in rules.rules:
        hit = _fire(result, rule)
        if hit is not None:
            hits.append(hit)
    return hits


def defect_score(result: Result, rules: InspectionRules) -> float:
    """The image-level defect score: the highest score any rule could fire at (0.0: none).

    For a finding rule, the highest score among findings that meet its class, area and region
    conditions (its score threshold left out); for an image-score rule, the model's image score.
    With every rule at one threshold t (`InspectionRules.at_threshold`), a frame fails exactly
    when this score is >= t.
    """
    best = 0.0
    for rule in rules.rules:
        candidates = _candidates(result, rule)
        if candidates:
            best = max(best, max(score for score, _, _ in candidates))
    return best


def _fire(result: Result, rule: Rule) -> RuleHit | None:
    threshold = rule.image_score if rule.is_image_score else rule.min_score
    passing = [c for c in _candidates(result, rule) if c[0] >= threshold]  # type: ignore[operator]
    if not passing:
        return None
    score, label, area = max(passing, key=lambda c: c[0])
    return RuleHit(rule=rule.name, label=label, score=score, pixel_area=area)


def _candidates(result: Result, rule: Rule) -> list[tuple[float, str, int]]:
    """(score, label, area) of what meets the rule's conditions other than its score threshold."""
    if rule.is_image_score:
        score = getattr(result, "image_score", None)
        return [] if score is None else [(float(score), "", 0)]
    if isinstance(result, DetectionResult):
        found = (_box_candidate(d, rule) for d in result.detections)
    else:
        found = (_mask_candidate(m, rule) for m in result.masks)
    return [c for c in found if c is not None]


def _wanted(label: str, rule: Rule) -> bool:
    return not rule.classes or label in rule.classes


def _box_candidate(det: Detection, rule: Rule) -> tuple[float, str, int] | None:
    if not _wanted(det.label, rule):
        return None
    area = int(round(max(0.0, det.x2 - det.x1) * max(0.0, det.y2 - det.y1)))
    if area < rule.min_area_px:
        return None
    if rule.roi is not None:
        cx, cy = (det.x1 + det.x2) / 2.0, (det.y1 + det.y2) / 2.0
        x1, y1, x2, y2 = rule.roi
        if not (x1 <= cx <= x2 and y1 <= cy <= y2):
            return None
    return float(det.score), det.label, area


def _mask_candidate(mask: ClassMask, rule: Rule) -> tuple[float, str, int] | None:
    if not _wanted(mask.label, rule):
        return None
    area = _area_inside(mask.mask, rule.roi)
    if area < max(1, rule.min_area_px):
        return None
    return float(mask.score), mask.label, area


def _area_inside(mask: np.ndarray, roi: tuple[float, float, float, float] | None) -> int:
    """Mask pixels inside the region (x1, y1 inclusive; x2, y2 exclusive; whole mask if None)."""
    if roi is None:
        return int(np.count_nonzero(mask))
    x1, y1, x2, y2 = (int(round(v)) for v in roi)
    return int(np.count_nonzero(mask[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]))
