"""Detection readers: Pascal VOC, COCO JSON, YOLO txt and DeepPCB boxes (plain numpy, no torch).

Images are read by `vision.datasets.images.load_image` (the server's decoder) when a task needs
their pixels; readers return paths and boxes.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from vision.errors import ConfigError, DatasetNotFoundError

DEEPPCB_CLASSES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class Sample:
    """One image and its boxes: `boxes` [N, 4] x1 y1 x2 y2 pixels, `labels` [N] 0-based."""

    image: Path
    boxes: np.ndarray
    labels: np.ndarray


def _sample(image: Path, boxes: list[list[float]], labels: list[int]) -> Sample:
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return Sample(Path(image), arr, np.asarray(labels, dtype=np.int64).reshape(-1))


def read_voc_xml(path: Path) -> tuple[str, list[tuple[str, list[float]]]]:
    """The image file name and (class name, box) pairs of one Pascal VOC annotation."""
    root = ET.parse(path).getroot()
    objects = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        box = [float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((obj.findtext("name", "").strip(), box))
    return root.findtext("filename", path.stem + ".jpg").strip(), objects


def load_voc(
    root: Path, split: str, classes: tuple[str, ...] | None = None
) -> tuple[list[Sample], tuple[str, ...]]:
    """VOC layout: JPEGImages/, Annotations/, ImageSets/Main/<split>.txt."""
    root = Path(root)
    names = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    parsed = [read_voc_xml(root / "Annotations" / f"{n}.xml") for n in names]
    if classes is None:
        classes = tuple(sorted({c for _, objs in parsed for c, _ in objs}))
    samples = []
    for name, (filename, objs) in zip(names, parsed, strict=True):
        image = root / "JPEGImages" / filename
        if not image.is_file():
            image = root / "JPEGImages" / f"{name}.jpg"
        kept = [(classes.index(c), b) for c, b in objs if c in classes]
        samples.append(_sample(image, [b for _, b in kept], [c for c, _ in kept]))
    return samples, classes


def load_coco(
    annotations: Path, image_dir: Path | None = None
) -> tuple[list[Sample], tuple[str, ...]]:
    """COCO instances JSON (bbox is x, y, w, h); images under `image_dir` (default: beside it)."""
    annotations = Path(annotations)
    data = json.loads(annotations.read_text())
    image_dir = Path(image_dir) if image_dir else annotations.parent
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict[int, list[tuple[int, list[float]]]] = {im["id"]: [] for im in data["images"]}
    for ann in data.get("annotations", []):
        x, y, w, h = ann["bbox"]
        per_image[ann["image_id"]].append((index[ann["category_id"]], [x, y, x + w, y + h]))
    samples = [
        _sample(
            image_dir / im["file_name"],
            [b for _, b in per_image[im["id"]]],
            [c for c, _ in per_image[im["id"]]],
        )
        for im in data["images"]
    ]
    return samples, tuple(c["name"] for c in cats)


def _yolo_classes(root: Path) -> tuple[str, ...]:
    for name in ("classes.txt", "obj.names"):
        if (root / name).is_file():
            return tuple(x.strip() for x in (root / name).read_text().splitlines() if x.strip())
    yaml_path = root / "data.yaml"
    if yaml_path.is_file():
        import yaml

        names = yaml.safe_load(yaml_path.read_text())["names"]
        return tuple(names.values() if isinstance(names, dict) else names)
    raise DatasetNotFoundError(f"{root}: no classes.txt, obj.names or data.yaml with class names")


def load_yolo(root: Path, split: str) -> tuple[list[Sample], tuple[str, ...]]:
    """YOLO layout: images/<split>/*, labels/<split>/*.txt (`cls cx cy w h`, normalised)."""
    root = Path(root)
    classes = _yolo_classes(root)
    samples = []
    for image in sorted((root / "images" / split).iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        with PILImage.open(image) as im:
            width, height = im.size
        label = root / "labels" / split / f"{image.stem}.txt"
        boxes, labels = [], []
        lines = label.read_text().splitlines() if label.is_file() else []
        for line in lines:
            parts = line.split()
            if len(parts) < 5:
                continue
            c, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
            boxes.append(
                [
                    (cx - w / 2) * width,
                    (cy - h / 2) * height,
                    (cx + w / 2) * width,
                    (cy + h / 2) * height,
                ]
            )
            labels.append(c)
        samples.append(_sample(image, boxes, labels))
    return samples, classes


def read_deeppcb_txt(path: Path) -> tuple[list[list[float]], list[int]]:
    """DeepPCB label lines `x1 y1 x2 y2 type` (type 1..6) -> boxes and 0-based labels."""
    boxes, labels = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) >= 5:
            boxes.append([float(v) for v in parts[:4]])
            labels.append(int(parts[4]) - 1)
    return boxes, labels


def load_deeppcb(root: Path, split: str) -> tuple[list[Sample], tuple[str, ...]]:
    """DeepPCB split `PCBData/<split>.txt`: `groupG/G/N.jpg groupG/G_not/N.txt` (image N_test)."""
    base = Path(root)
    base = base / "PCBData" if (base / "PCBData").is_dir() else base
    samples = []
    for line in (base / f"{split}.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        image = base / parts[0]
        image = image.with_name(f"{image.stem}_test{image.suffix}")
        boxes, labels = read_deeppcb_txt(base / parts[1])
        samples.append(_sample(image, boxes, labels))
    return samples, DEEPPCB_CLASSES


def load_dataset(fmt: str, root: Path, split: str) -> tuple[list[Sample], tuple[str, ...]]:
    """Read a split: voc | coco (a JSON file, or a dir with <split>.json) | yolo | deeppcb."""
    root = Path(root)
    if fmt == "voc":
        return load_voc(root, split)
    if fmt == "coco":
        path = root if root.suffix == ".json" else root / f"{split}.json"
        return load_coco(path, path.parent if root.suffix == ".json" else root / split)
    if fmt == "yolo":
        return load_yolo(root, split)
    if fmt == "deeppcb":
        return load_deeppcb(root, split)
    raise ConfigError(f"unknown detection format {fmt!r}: voc | coco | yolo | deeppcb")


def split_holdout(samples: list[Sample], count: int, seed: int = 0) -> tuple[list, list]:
    """A seeded (train, held-out) split of `samples`."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [s for i, s in enumerate(samples) if i not in held], [samples[i] for i in sorted(held)]
