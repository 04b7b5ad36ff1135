"""An Ultralytics YOLOv8 export served by writing a config.yaml only, checked against Ultralytics.

A YOLOv8n built from its yaml (no weights downloaded) is trained briefly on a handful of BCCD
images, exported with Ultralytics' own ONNX exporter, put into a repository with a config written
here, and served. Detect must give what Ultralytics' own ONNX inference (AutoBackend, LetterBox,
NMS) gives on the same image: same boxes and labels, corners within 1 px (only boxes scored
within SCORE_BAND of the threshold may be found by one side alone).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from tests.thirdparty.conftest import png_bytes, write_repository
from vision.paths import datasets_root
from vision.postprocess import box_iou

pytestmark = pytest.mark.slow  # trains a detector (about a minute on 2 CPU cores)

LABELS = ["RBC", "WBC", "Platelets"]
IMGSZ = 320
CONF, IOU = 0.25, 0.45
# The server resizes the image as float32, Ultralytics as uint8 (rounded): input values differ by
# up to 0.75/255, which moves this briefly trained model's scores by up to ~0.01. A box this close
# to CONF may be kept by one and dropped by the other: only such boxes may go unmatched.
SCORE_BAND = 0.001
TRAIN_IMAGES, EPOCHS = 3, 40  # 40 optimiser steps: about a minute on 2 CPU cores
BCCD = datasets_root() / "bccd" / "BCCD"


@dataclass(frozen=True)
class Exported:
    """The exported detector and the images it was trained on."""

    onnx: Path
    images: tuple[Path, ...]


@dataclass(frozen=True)
class Boxes:
    """Detections of one image: xyxy corners (N x 4), class ids and scores."""

    xyxy: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def yolov8_config() -> dict[str, Any]:
    """The config a user writes for this export (see docs/third-party-models.md)."""
    return {
        "name": "yolov8-bccd",
        "task": "detection",
        "labels": LABELS,
        "input": {"name": "images", "height": IMGSZ, "width": IMGSZ, "channels": 3},
        "preprocess": {
            "resize": "letterbox",
            "pad_value": 114,
            "scale": 1 / 255,
            "channel_order": "RGB",
        },
        "postprocess": {
            "type": "yolov8",
            "output": "output0",
            "score_threshold": CONF,
            "iou_threshold": IOU,
            "max_detections": 300,
        },
        "batching": {"max_batch_size": 1},  # a static export takes batch 1
        "runtime": {"providers": "cpu", "intra_op_threads": 1, "inter_op_threads": 1},
    }


# ---------------------------------------------------------------- dataset and training


def voc_to_yolo(xml_path: Path) -> str:
    """Pascal VOC boxes -> YOLO label lines `class cx cy w h` (normalised)."""
    root = ET.parse(xml_path).getroot()
    width = float(root.findtext("size/width"))
    height = float(root.findtext("size/height"))
    lines = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        cls = LABELS.index(obj.findtext("name").strip())
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "\n".join(lines) + "\n"


def write_dataset(folder: Path, count: int) -> tuple[Path, tuple[Path, ...]]:
    """A YOLO-format dataset of the first `count` BCCD training images; (data.yaml, images)."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    stems = (BCCD / "ImageSets" / "Main" / "train.txt").read_text().split()[:count]
    images = []
    for stem in stems:
        images.append(Path(shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", folder / "images")))
        labels = voc_to_yolo(BCCD / "Annotations" / f"{stem}.xml")
        (folder / "labels" / f"{stem}.txt").write_text(labels)
    data = folder / "data.yaml"
    data.write_text(f"path: {folder}\ntrain: images\nval: images\nnames: {LABELS}\n")
    return data, tuple(images)


def settle_batchnorm(network: Any, images: tuple[Path, ...]) -> None:
    """Recompute BatchNorm running statistics on the (letterboxed) training images.

    After a few dozen steps the running averages (momentum 0.03) are still far from the batch
    statistics the weights were trained with, and the eval-mode model scores every box near 1.
    """
    import torch
    from ultralytics.data.augment import LetterBox

    letterbox = LetterBox((IMGSZ, IMGSZ), auto=False)
    batch = [letterbox(image=cv2.imread(str(p)))[:, :, ::-1].transpose(2, 0, 1) for p in images]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(batch))).float() / 255.0
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
    network.float().train()
    with torch.no_grad():
        network(x)
    network.eval()


def train_and_export(yolo: Any, data: Path, images: tuple[Path, ...], runs: Path) -> Path:
    """Overfit YOLOv8n (from its yaml) on the few images, export ONNX with Ultralytics."""
    model = yolo("yolov8n.yaml")
    no_augment = {"mosaic": 0.0, "fliplr": 0.0, "translate": 0.0, "scale": 0.0}
    no_augment |= {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
    model.train(
        data=str(data),
        epochs=EPOCHS,
        imgsz=IMGSZ,
        batch=TRAIN_IMAGES,
        nbs=TRAIN_IMAGES,  # one optimiser step per batch
        optimizer="AdamW",
        lr0=0.003,
        lrf=1.0,  # constant learning rate
        warmup_epochs=0,
        close_mosaic=0,
        device="cpu",
        workers=0,
        amp=False,  # the AMP check would fetch weights
        plots=False,  # plotting would fetch a font
        val=False,
        seed=0,
        deterministic=True,
        project=str(runs),
        name="train",
        exist_ok=True,
        verbose=False,
        **no_augment,
    )
    settle_batchnorm(model.model, images)
    # Static shape: Ultralytics then predicts at the full IMGSZ square, as the server does (with a
    # dynamic export it letterboxes to the smallest stride-multiple rectangle instead).
    path = model.export(format="onnx", opset=17, dynamic=False, simplify=False, imgsz=IMGSZ)
    return Path(path)


@pytest.fixture(scope="session")
def exported(ultralytics: Any, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Train once per session; the ONNX export and the training images."""
    if not (BCCD / "JPEGImages").is_dir():
        pytest.skip(f"BCCD not found under {datasets_root()} (set VISION_DATASETS)")
    root = tmp_path_factory.mktemp("yolov8")
    data, images = write_dataset(root / "dataset", TRAIN_IMAGES)
    return Exported(train_and_export(ultralytics.YOLO, data, images, root / "runs"), images)


@pytest.fixture(scope="module")
def stub(exported: Exported, serve: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A vision.v1 stub of a server whose repository holds the export and its config."""
    root = tmp_path_factory.mktemp("yolov8-repo")
    return serve(write_repository(root, exported.onnx, yolov8_config()))


# ---------------------------------------------------------------- the comparison


def server_boxes(stub: Any, rgb: np.ndarray) -> Boxes:
    """Detect through the server (image sent as lossless PNG)."""
    request = pb.DetectRequest(
        model=pb.ModelRef(name="yolov8-bccd"), image=pb.ImageInput(encoded=png_bytes(rgb))
    )
    found = stub.Detect(request).detections
    xyxy = [[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in found]
    for d in found:
        assert d.label == LABELS[d.class_id]
    return Boxes(
        np.asarray(xyxy, dtype=np.float64).reshape(-1, 4),
        np.asarray([d.class_id for d in found], dtype=np.int64),
        np.asarray([d.score for d in found], dtype=np.float64),
    )


def ultralytics_boxes(yolo: Any, onnx: Path, rgb: np.ndarray) -> Boxes:
    """Ultralytics' own ONNX inference (AutoBackend + LetterBox + NMS) on the same pixels."""
    model = yolo(str(onnx), task="detect")
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # Ultralytics takes numpy images as BGR
    result = model(bgr, conf=CONF, iou=IOU, imgsz=IMGSZ, device="cpu", verbose=False)[0]
    return Boxes(
        result.boxes.xyxy.numpy().astype(np.float64),
        result.boxes.cls.numpy().astype(np.int64),
        result.boxes.conf.numpy().astype(np.float64),
    )


def match(ours: Boxes, theirs: Boxes) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (ours, theirs) of the same class by IoU (above 0.5), best first."""
    if not len(ours.xyxy) or not len(theirs.xyxy):
        return []
    iou = box_iou(ours.xyxy, theirs.xyxy)
    iou[ours.classes[:, None] != theirs.classes[None, :]] = 0.0
    pairs: list[tuple[int, int]] = []
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] <= 0.5:
            break
        if all(i != a and j != b for a, b in pairs):
            pairs.append((int(i), int(j)))
    return pairs


def unmatched_scores(ours: Boxes, theirs: Boxes, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Scores of the boxes, on either side, that have no partner."""
    i, j = [p[0] for p in pairs], [p[1] for p in pairs]
    return np.concatenate([np.delete(ours.scores, i), np.delete(theirs.scores, j)])


def describe(ours: Boxes, theirs: Boxes, pairs: list[tuple[int, int]]) -> str:
    """Numbers for an assertion message: counts, worst corner and score differences."""
    head = f"server {len(ours.xyxy)} boxes, Ultralytics {len(theirs.xyxy)}, matched {len(pairs)}"
    if not pairs:
        return head
    i, j = map(list, zip(*pairs, strict=True))
    corner = np.abs(ours.xyxy[i] - theirs.xyxy[j]).max()
    score = np.abs(ours.scores[i] - theirs.scores[j]).max()
    unmatched = np.round(unmatched_scores(ours, theirs, pairs), 4).tolist()
    return (
        f"{head}; max corner diff {corner:.3f} px, max score diff {score:.2e}; "
        f"unmatched scores {unmatched}"
    )


def real_images(exported: Exported) -> dict[str, np.ndarray]:
    """A training image as is (640x480) and an odd-sized crop of one (letterbox rounding)."""
    first = cv2.imread(str(exported.images[0]), cv2.IMREAD_COLOR)[:, :, ::-1]
    second = cv2.imread(str(exported.images[1]), cv2.IMREAD_COLOR)[:, :, ::-1]
    return {"full": first, "crop": np.ascontiguousarray(second[11:468, 5:618])}


@pytest.mark.parametrize("which", ["full", "crop"])
def test_detect_matches_ultralytics(ultralytics: Any, exported: Exported, stub, which) -> None:
    rgb = real_images(exported)[which]
    ours = server_boxes(stub, rgb)
    theirs = ultralytics_boxes(ultralytics.YOLO, exported.onnx, rgb)
    pairs = match(ours, theirs)
    summary = describe(ours, theirs, pairs)
    print(summary)
    assert pairs, f"the briefly trained model found nothing: {summary}"
    # Same boxes and labels: all matched (same class), but for those at the threshold.
    assert (unmatched_scores(ours, theirs, pairs) <= CONF + SCORE_BAND).all(), summary
    i, j = map(list, zip(*pairs, strict=True))
    assert np.abs(ours.xyxy[i] - theirs.xyxy[j]).max() <= 1.0, summary
