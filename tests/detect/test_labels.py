"""Labels are the model's everywhere: readers map names to the model's label list, a split
without a class reports it absent (not AP 0), and VOC `difficult` boxes are ignored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.datasets.detection import load_coco, load_dataset, load_voc
from vision.detect.evaluate import compute_metrics
from vision.detect.metrics import Boxes, ap_per_class
from vision.errors import ConfigError, DatasetNotFoundError

LABELS = ("crack", "dent", "scratch")


def _voc(root: Path, objects: dict[str, list[tuple[str, list[int], int]]]) -> Path:
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    for name, objs in objects.items():
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        xml = "".join(
            f"<object><name>{c}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for c, b, d in objs
        )
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename>{xml}</annotation>"
        )
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(objects))
    return root


def test_a_split_without_a_class_keeps_the_model_label_indices(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": [("scratch", [1, 1, 9, 9], 0)], "b": [("crack", [2, 2, 8, 8], 0)]})
    samples, classes = load_voc(root, "test", LABELS)
    assert classes == LABELS
    assert [s.labels.tolist() for s in samples] == [[2], [0]]
    # without the model's labels the split alone would renumber scratch as 1: the old bug
    assert load_voc(root, "test")[1] == ("crack", "scratch")


def test_an_unknown_class_name_is_an_error_that_names_it(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": [("rust", [1, 1, 9, 9], 0)]})
    with pytest.raises(ConfigError, match="rust"):
        load_dataset("voc", root, "test", LABELS)


def test_a_missing_split_list_names_the_file_and_the_flag(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": [("crack", [1, 1, 9, 9], 0)]})
    with pytest.raises(DatasetNotFoundError, match=r"val\.txt.*--val-split"):
        load_voc(root, "val", LABELS)


def test_coco_categories_map_by_name_and_crowd_is_difficult(tmp_path: Path) -> None:
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "categories": [{"id": 5, "name": "scratch"}, {"id": 9, "name": "crack"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 8, 8]},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [2, 2, 8, 8], "iscrowd": 1},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    samples, classes = load_coco(tmp_path / "a.json", tmp_path, LABELS)
    assert classes == LABELS
    assert samples[0].labels.tolist() == [2, 0]
    assert samples[0].difficult.tolist() == [False, True]


def _pred(boxes: list[list[float]], labels: list[int], scores: list[float]) -> Boxes:
    return Boxes(
        np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels), np.asarray(scores)
    )


def test_an_absent_class_is_reported_absent_and_left_out_of_the_mean() -> None:
    truths = [Boxes.truth([[0, 0, 10, 10]], [0]), Boxes.truth([[20, 20, 30, 30]], [2])]
    preds = [_pred([[0, 0, 10, 10]], [0], [0.9]), _pred([[20, 20, 30, 30]], [2], [0.8])]
    metrics = compute_metrics(preds, truths, LABELS, 0.5, deeppcb=False)
    assert metrics["absent_classes"] == ["dent"]
    assert metrics["instances_per_class"] == {"crack": 1, "dent": 0, "scratch": 1}
    assert metrics["ap50_per_class"]["dent"] is None
    assert metrics["voc_ap50_per_class"]["dent"] is None
    assert metrics["map50"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["voc_map50"] == pytest.approx(1.0)


def test_difficult_boxes_are_neither_hits_nor_misses() -> None:
    truth = Boxes.truth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [False, True])
    found_both = _pred([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [0.9, 0.95])
    found_easy = _pred([[0, 0, 10, 10]], [0], [0.9])
    # the detection of the difficult box (scored highest) is not a false positive ...
    assert ap_per_class([found_both], [truth], 1)[0] == pytest.approx(1.0)
    # ... and missing it is not a miss
    assert ap_per_class([found_easy], [truth], 1)[0] == pytest.approx(1.0)
    coco = compute_metrics([found_both], [truth], ("crack",), 0.5, deeppcb=False)
    assert coco["map50"] == pytest.approx(1.0, abs=1e-6)
    as_plain = Boxes.truth(truth.boxes, truth.labels)
    assert ap_per_class([found_easy], [as_plain], 1)[0] == pytest.approx(0.5)


def test_voc_difficult_flags_are_read(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": [("crack", [1, 1, 9, 9], 1), ("dent", [2, 2, 9, 9], 0)]})
    samples, _ = load_voc(root, "test", LABELS)
    assert samples[0].difficult.tolist() == [True, False]
