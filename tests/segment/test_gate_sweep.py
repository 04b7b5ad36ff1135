"""Choosing the image-score gate on val: the point rule, the confidence-bound rule and the
centre of the span that keeps the same Dice."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from vision.segment.gate_sweep import centred_gate, lowest_gate, rate_upper_bound  # noqa: E402


def test_upper_bound_is_clopper_pearson() -> None:
    """0 of n has the closed form 1 - (1 - C)^(1/n); the bound lies above k/n, grows with k,
    and is 1 when every tile had a mask."""
    for n in (20, 87, 500):
        assert rate_upper_bound(0, n, 0.95) == pytest.approx(1 - 0.05 ** (1 / n))
    bounds = [rate_upper_bound(k, 87, 0.95) for k in range(10)]
    assert all(b > k / 87 for k, b in enumerate(bounds))
    assert bounds == sorted(bounds) and rate_upper_bound(87, 87, 0.95) == 1.0
    assert rate_upper_bound(8, 87, 0.95) > 0.10 >= rate_upper_bound(3, 87, 0.95)


def test_confidence_rule_keeps_fewer_masks_on_free_tiles_than_the_point_rule() -> None:
    """100 defect-free tiles, every one with a mask, scores 0.01..1.00, and 20 defect tiles that
    must not count: the point rule leaves 10 masks, the 95 % bound rule only as many as keep
    the bound at or under 10 %."""
    free_scores = list(np.linspace(0.01, 1.0, 100))
    defect_scores = [0.005] * 20  # below every free score: counting them would move the gate
    scores = free_scores + defect_scores
    fired = [True] * 120
    free = [True] * 100 + [False] * 20
    point = lowest_gate(scores, fired, free, 0.10)
    bound = lowest_gate(scores, fired, free, 0.10, confidence=0.95)
    kept_point = sum(s >= point for s in free_scores)
    kept_bound = sum(s >= bound for s in free_scores)
    allowed = max(k for k in range(101) if rate_upper_bound(k, 100, 0.95) <= 0.10)
    assert kept_point == 10 and kept_bound == allowed < kept_point and bound > point


def test_too_few_free_tiles_for_the_bound_gives_one() -> None:
    """Five defect-free tiles: the point rule finds a gate that leaves none masked, but even
    0 of 5 only bounds the rate at 45 %, so the bound rule serves nothing (gate 1.0)."""
    scores = [0.1, 0.2, 0.3, 0.4, 0.5]
    fired = [True, True, True, True, False]  # the highest-scored tile has no mask
    free = [True] * 5
    assert lowest_gate(scores, fired, free, 0.10) == 0.5
    assert lowest_gate(scores, fired, free, 0.10, confidence=0.95) == 1.0


def test_centre_is_midway_to_the_first_defect_tile_whose_mask_counts() -> None:
    """Defect-free tiles at 0.50-0.58 (one with a mask per 0.02), defect tiles at 0.30 (below
    the lowest gate: already lost), 0.62 with Dice 0 (its mask misses: gating it costs
    nothing), 0.70 and 0.90 with masks that count: the span is [low, 0.70] and the gate its
    middle; it masks no more defect-free tiles than the lowest gate does."""
    free_scores = [0.50, 0.52, 0.54, 0.56, 0.58]
    scores = free_scores + [0.30, 0.62, 0.70, 0.90]
    dice: list[float | None] = [None] * 5 + [0.8, 0.0, 0.6, 0.9]
    fired = [True] * 9
    free = [True] * 5 + [False] * 4
    low = lowest_gate(scores, fired, free, 0.20)
    assert low == 0.58  # one of five defect-free tiles keeps a mask: 20 %
    gate = centred_gate(scores, dice, low)
    assert gate == pytest.approx((0.58 + 0.70) / 2)
    assert sum(s >= gate for s in free_scores) <= sum(s >= low for s in free_scores)


def test_centre_stays_at_the_lowest_gate_when_val_shows_no_upper_end() -> None:
    """No defect tile with a counting mask above the lowest gate, or no gate at all (1.0):
    the lowest gate is kept, not moved to an end val cannot see."""
    scores = [0.2, 0.4, 0.6]
    assert centred_gate(scores, [None, 0.7, 0.0], 0.5) == 0.5  # 0.4 is below, 0.6 misses
    assert centred_gate(scores, [None, 0.7, 0.9], 1.0) == 1.0
    assert centred_gate(scores, [None, 0.7, 0.9], 0.6) == 0.6  # a defect tile right at the gate
