"""Mask encodings (PNG, RLE) and overlay rendering."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vision.errors import InvalidInputError
from vision.masks import RunLengths, decode_png, decode_rle, encode_png, encode_rle
from vision.render import draw_overlay, encode_png_rgb, heatmap_overlay
from vision.types import ClassMask, Detection, DetectionResult, Image, SegmentationResult

RNG = np.random.default_rng(2)

MASKS = {
    "random": RNG.random((13, 17)) > 0.5,
    "empty": np.zeros((4, 5), bool),
    "full": np.ones((4, 5), bool),
    "first-on": np.eye(6, dtype=bool),
    "one-row": RNG.random((1, 9)) > 0.3,
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_rle_round_trip(name: str) -> None:
    mask = MASKS[name]
    counts = encode_rle(mask)
    assert sum(counts) == mask.size
    assert all(isinstance(c, int) for c in counts)
    np.testing.assert_array_equal(decode_rle(counts, *mask.shape), mask)


def test_rle_layout() -> None:
    mask = np.array([[1, 1, 0], [0, 1, 1]], bool)
    assert encode_rle(mask) == [0, 2, 2, 2]
    assert encode_rle(~mask) == [2, 2, 2]
    with pytest.raises(InvalidInputError, match="sum to 5"):
        decode_rle([2, 3], 2, 3)
    with pytest.raises(InvalidInputError, match="non-negative"):
        decode_rle([7, -1], 2, 3)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_png_round_trip(name: str) -> None:
    data = encode_png(MASKS[name])
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.dtype == np.uint8 and grey.ndim == 2 and set(np.unique(grey)) <= {0, 255}
    np.testing.assert_array_equal(decode_png(data), MASKS[name])


def test_png_decode_errors() -> None:
    with pytest.raises(InvalidInputError):
        decode_png(b"not a png")


def test_draw_overlay_masks_and_boxes() -> None:
    image = Image(np.full((40, 60, 1), 1000, np.uint16))
    image.pixels[0, 0] = 0
    mask = np.zeros((40, 60), bool)
    mask[10:30, 10:30] = True
    seg = draw_overlay(image, SegmentationResult([ClassMask(1, "thing", mask, 0.9)]))
    assert seg.shape == (40, 60, 3) and seg.dtype == np.uint8
    assert tuple(seg[20, 20]) != (255, 255, 255) and tuple(seg[35, 50]) == (255, 255, 255)
    boxes = DetectionResult([Detection(5, 5, 50, 35, 0.8, 2, "part")])
    drawn = draw_overlay(Image(np.zeros((40, 60, 3), np.uint8)), boxes)
    assert drawn[30, 5].any() and not drawn[30, 30].any()  # edge, inside


def test_heatmap_and_png() -> None:
    image = Image(np.zeros((20, 30, 3), np.uint8))
    heat = np.linspace(0, 1, 10 * 15, dtype=np.float32).reshape(10, 15)
    rgb = heatmap_overlay(image, heat)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 2] > rgb[0, 0, 0] and rgb[-1, -1, 0] > rgb[-1, -1, 2]  # blue low, red high
    back = cv2.imdecode(np.frombuffer(encode_png_rgb(rgb), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), rgb)


def test_run_lengths_of_pieces_are_the_whole_masks() -> None:
    """Pieces cut anywhere (inside runs, at their ends, empty) give `encode_rle` of the whole."""
    rng = np.random.default_rng(7)
    assert RunLengths().counts() == encode_rle(np.zeros(0, bool)) == [0]
    for trial in range(200):
        size = int(rng.integers(1, 60))
        mask = rng.random(size) < rng.random()
        if trial % 10 == 0:
            mask[:] = trial % 20 == 0  # all on, all off
        cuts = sorted(rng.integers(0, size + 1, int(rng.integers(0, 6))).tolist())
        runs, start = RunLengths(), 0
        for stop in [*cuts, size]:
            runs.add(mask[start:stop].astype(np.uint8) * 3 if trial % 2 else mask[start:stop])
            start = stop
        assert runs.size == size
        assert runs.counts() == encode_rle(mask), (mask.tolist(), cuts)
