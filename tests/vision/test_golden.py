"""Golden-template inspection: registration, difference map, pre-filter (synthetic boards)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vision.golden import (
    GoldenSettings,
    combine,
    difference_map,
    passes,
    register,
    warp_template,
)
from vision.types import Detection


def board(size: int = 320, seed: int = 0) -> np.ndarray:
    """A binarised PCB-like image: traces and pads on a dark background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.uint8)
    for _ in range(40):
        x, y = (int(v) for v in rng.integers(20, size - 20, 2))
        if rng.random() < 0.5:
            cv2.line(img, (x, y), (x + int(rng.integers(-80, 80)), y), 255, int(rng.integers(3, 7)))
        else:
            cv2.line(img, (x, y), (x, y + int(rng.integers(-80, 80))), 255, int(rng.integers(3, 7)))
        cv2.circle(img, (x, y), int(rng.integers(4, 9)), 255, -1)
    return img


def moved(img: np.ndarray, dx: float, dy: float, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """`img` rotated about its centre and shifted; and the forward 2x3 matrix used."""
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR), m


@pytest.mark.parametrize("dx,dy,degrees", [(3.0, -2.0, 0.0), (-4.5, 2.5, 1.0)])
def test_registration_recovers_shift_and_rotation(dx: float, dy: float, degrees: float) -> None:
    template = board()
    image, forward = moved(template, dx, dy, degrees)
    reg = register(image, template)
    assert reg.method in ("ecc", "orb")
    # warp maps image pixels to template pixels: the inverse of `forward`
    expected = cv2.invertAffineTransform(forward)
    assert np.abs(reg.warp[:, :2] - expected[:, :2]).max() < 0.01
    assert np.abs(reg.warp[:, 2] - expected[:, 2]).max() < 0.75
    aligned = warp_template(template, reg, image.shape)
    inner = (slice(20, -20), slice(20, -20))
    assert cv2.absdiff(image, aligned)[inner].mean() < 3.0


def test_difference_map_finds_a_pasted_defect() -> None:
    template = board(seed=1)
    image, _ = moved(template, 2.0, 1.0, 0.5)
    cv2.rectangle(image, (150, 150), (162, 160), 255, -1)  # spurious copper
    cv2.rectangle(image, (60, 230), (70, 240), 0, -1)  # a hole in whatever is there
    cv2.circle(image, (60, 235), 2, 255, -1)
    dmap = difference_map(image, template)
    hits = [r for r in dmap.regions if r.x1 <= 162 and r.x2 >= 150 and r.y1 <= 160 and r.y2 >= 150]
    assert hits, dmap.regions
    assert not passes(dmap)


def test_identical_images_have_no_difference_and_pass_the_prefilter() -> None:
    template = board(seed=2)
    dmap = difference_map(template.copy(), template)
    assert dmap.regions == []
    assert not dmap.mask.any()
    assert passes(dmap)


def test_combine_down_weights_unsupported_and_adds_uncovered_regions() -> None:
    template = board(seed=3)
    image = template.copy()
    cv2.rectangle(image, (100, 100), (112, 110), 255, -1)
    cv2.rectangle(image, (250, 40), (262, 50), 255, -1)
    dmap = difference_map(image, template, GoldenSettings(threshold=40))
    on = Detection(98, 98, 114, 112, 0.8, 4, "copper")
    off = Detection(10, 200, 30, 220, 0.6, 3, "spur")
    out = combine([on, off], dmap, weight=0.5)
    assert [d.score for d in out] == [0.8, pytest.approx(0.3)]
    assert combine([on, off], dmap, weight=0.0) == [on]
    added = combine([on], dmap, add_regions=True)
    assert any(d.class_id == -1 and d.x1 >= 240 for d in added)


def test_deeppcb_pair_smoke() -> None:
    """One real DeepPCB pair: ECC registers it and the difference map covers its defects."""
    from vision.datasets.detection import load_deeppcb
    from vision.paths import datasets_root

    root = datasets_root() / "deeppcb"
    if not (root / "PCBData" / "test.txt").is_file():
        pytest.skip(f"DeepPCB not found at {root} (set VISION_DATASETS to the shared datasets)")
    sample = load_deeppcb(root, "test")[0][0]
    image = cv2.imread(str(sample.image), cv2.IMREAD_GRAYSCALE)
    template = cv2.imread(str(sample.image).replace("_test", "_temp"), cv2.IMREAD_GRAYSCALE)
    dmap = difference_map(image, template)
    assert dmap.registration is not None and dmap.registration.method == "ecc"
    covered = [dmap.mask[y1:y2, x1:x2].any() for x1, y1, x2, y2 in sample.boxes.astype(int)]
    assert np.mean(covered) >= 0.8
