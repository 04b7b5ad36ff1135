"""The same pixels as PNG and as DICOM give the same masks, boxes and scores (issue 20).

A greyscale DICOM without a VOI window maps its full stored range (0..2^BitsStored-1 through
the rescale) onto 0..255, so an 8-bit object keeps its values, and preprocessing resizes every
image in 8 bits: through the data plane, PNG and DICOM input of one image are the same tensor.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from serving.dataplane import ImageSource, PredictOptions
from tests.serving.conftest import ServerThread, start_server
from tests.vision.dicom_files import make_dicom
from vision.paths import datasets_root
from vision.types import DetectionResult, SegmentationResult

MODELS = Path(__file__).resolve().parents[2] / "models"


def _grey(dtype: type, seed: int = 3) -> np.ndarray:
    """A 37x53 grey image with structure (a bright blob on noise): resizing interpolates it.

    Mean grey about 0.6 (an image score over the tiny segmenter's threshold), the blob above
    the mask threshold, part of the noise below it.
    """
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    pixels = rng.integers(int(top * 0.3), int(top * 0.8), (37, 53)).astype(np.float64)
    yy, xx = np.mgrid[:37, :53]
    pixels += (top / 2) * np.exp(-((yy - 15) ** 2 + (xx - 30) ** 2) / 60.0)
    return np.clip(pixels, 0, top).astype(dtype)


def _predict(server: ServerThread, task: str, model: str, encoded: bytes):
    plane = server.server.plane
    source = ImageSource(encoded=encoded)
    return server.call(plane.predict(task, model, "", source, PredictOptions())).result


def _both(server: ServerThread, task: str, model: str, pixels: np.ndarray):
    png = cv2.imencode(".png", pixels)[1].tobytes()
    return _predict(server, task, model, png), _predict(server, task, model, make_dicom(pixels))


def _assert_same_masks(a: SegmentationResult, b: SegmentationResult) -> None:
    assert [m.label for m in a.masks] == [m.label for m in b.masks]
    for mask_a, mask_b in zip(a.masks, b.masks, strict=True):
        np.testing.assert_array_equal(mask_a.mask, mask_b.mask)
        assert mask_a.score == mask_b.score
    assert a.image_score == b.image_score


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_segmentation_masks_and_image_score_are_identical(server, dtype: type) -> None:
    as_png, as_dicom = _both(server, "segmentation", "bright-scored", _grey(dtype))
    assert as_png.masks and as_png.image_score is not None
    assert 0 < as_png.masks[0].mask.sum() < as_png.masks[0].mask.size  # content-dependent
    _assert_same_masks(as_png, as_dicom)


def test_detection_boxes_and_scores_are_identical(server) -> None:
    as_png, as_dicom = _both(server, "detection", "boxes", _grey(np.uint8))
    assert isinstance(as_png, DetectionResult) and as_png.detections
    assert as_png.detections == as_dicom.detections  # boxes, scores, classes, anchors


def _tile_image() -> np.ndarray:
    root = datasets_root() / "magnetic-tile"
    path = next(iter(sorted(root.glob("MT_*/Imgs/*.png"))), None) if root.is_dir() else None
    if path is None:
        return _grey(np.uint8, seed=11)
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def tile_server(tmp_path_factory: pytest.TempPathFactory):
    model = MODELS / "tile-defects"
    if not (model / "1" / "model.onnx").is_file():
        pytest.skip(f"{model}/1/model.onnx is absent (the bundled tile-defects model)")
    repository = tmp_path_factory.mktemp("tile-repository")
    (repository / "tile-defects").symlink_to(model, target_is_directory=True)
    running = start_server(repository)
    yield running
    running.stop()


def test_bundled_tile_model_scores_png_and_dicom_alike(tile_server) -> None:
    """The issue's case: tile-defects gave image score 0.538 as PNG and 0.573 as DICOM."""
    as_png, as_dicom = _both(tile_server, "segmentation", "tile-defects", _tile_image())
    assert as_png.image_score is not None
    _assert_same_masks(as_png, as_dicom)
