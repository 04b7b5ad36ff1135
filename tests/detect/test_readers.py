"""Reader round-trips for the four annotation formats, on tiny files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.datasets.detection import (
    DEEPPCB_CLASSES,
    load_coco,
    load_dataset,
    load_deeppcb,
    load_voc,
    load_yolo,
)
from vision.detect.data import DetectionDataset

BOXES = np.array([[2, 3, 20, 18], [10, 12, 30, 31]], np.float32)


def _image(path: Path, w: int = 40, h: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(path)
    return path


def test_voc(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "a.jpg")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("a\n")
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]:g}</xmin><ymin>{b[1]:g}</ymin>"
        f"<xmax>{b[2]:g}</xmax><ymax>{b[3]:g}</ymax></bndbox></object>"
        for n, b in zip(["WBC", "RBC"], BOXES, strict=True)
    )
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename>{objects}</annotation>"
    )
    samples, classes = load_voc(root, "test")
    assert classes == ("RBC", "WBC")
    np.testing.assert_allclose(samples[0].boxes, BOXES)
    assert samples[0].labels.tolist() == [1, 0]
    assert samples[0].image.is_file()


def test_coco(tmp_path: Path) -> None:
    _image(tmp_path / "val" / "a.png")
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 32}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 3, 18, 15]},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [10, 12, 20, 19]},
        ],
    }
    (tmp_path / "val.json").write_text(json.dumps(data))
    samples, classes = load_dataset("coco", tmp_path, "val")
    assert classes == ("dog", "cat")
    np.testing.assert_allclose(samples[0].boxes, BOXES)
    assert samples[0].labels.tolist() == [1, 0]
    same, _ = load_coco(tmp_path / "val.json", tmp_path / "val")
    np.testing.assert_allclose(same[0].boxes, BOXES)


def test_yolo(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "train" / "a.jpg", w=40, h=32)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    lines = [
        f"{c} {(b[0] + b[2]) / 80} {(b[1] + b[3]) / 64} {(b[2] - b[0]) / 40} {(b[3] - b[1]) / 32}"
        for c, b in zip([0, 1], BOXES, strict=True)
    ]
    (tmp_path / "labels" / "train" / "a.txt").write_text("\n".join(lines))
    (tmp_path / "classes.txt").write_text("x\ny\n")
    samples, classes = load_yolo(tmp_path, "train")
    assert classes == ("x", "y")
    np.testing.assert_allclose(samples[0].boxes, BOXES, atol=1e-3)
    assert samples[0].labels.tolist() == [0, 1]


def test_deeppcb(tmp_path: Path) -> None:
    base = tmp_path / "PCBData"
    _image(base / "group1" / "1" / "00001_test.jpg")
    (base / "group1" / "1_not").mkdir(parents=True)
    (base / "group1" / "1_not" / "00001.txt").write_text("2 3 20 18 1\n10 12 30 31 6\n")
    (base / "test.txt").write_text("group1/1/00001.jpg group1/1_not/00001.txt\n")
    samples, classes = load_deeppcb(tmp_path, "test")
    assert classes == DEEPPCB_CLASSES
    assert samples[0].image.name == "00001_test.jpg"
    np.testing.assert_allclose(samples[0].boxes, BOXES)
    assert samples[0].labels.tolist() == [0, 5]


@pytest.mark.parametrize("mode", ["crop", "letterbox"])
def test_dataset_keeps_boxes_inside(tmp_path: Path, mode: str) -> None:
    test_deeppcb(tmp_path)
    samples, _ = load_deeppcb(tmp_path, "test")
    ds = DetectionDataset(samples, 1, (32, 32), mode=mode, train=True, rotate=True)
    for _ in range(5):
        image, target = ds[0]
        assert image.shape == (1, 32, 32)
        assert (target[:, 1:] >= 0).all() and (target[:, 1:] <= 32).all()
