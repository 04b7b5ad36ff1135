"""Detection readers: Pascal VOC, COCO JSON, YOLO txt and DeepPCB boxes (plain numpy, no torch).

Images are read by `vision.datasets.images.load_image` (the server's decoder) when a task needs
their pixels; readers return paths and boxes.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from vision.errors import ConfigError, DatasetNotFoundError

DEEPPCB_CLASSES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class Sample:
    """One image and its boxes: `boxes` [N, 4] x1 y1 x2 y2 pixels, `labels` [N] 0-based,
    `difficult` [N] (VOC `difficult`, COCO `iscrowd`: evaluation ignores them)."""

    image: Path
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        if len(self.difficult) != len(self.labels):
            self.difficult = np.zeros(len(self.labels), bool)


def _sample(
    image: Path,
    boxes: list[list[float]],
    labels: list[int],
    difficult: list[bool] | None = None,
) -> Sample:
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    flags = np.asarray(difficult if difficult is not None else [False] * len(labels), bool)
    return Sample(Path(image), arr, np.asarray(labels, dtype=np.int64).reshape(-1), flags)


def class_index(
    found: Iterable[str], classes: tuple[str, ...] | None, where: str
) -> tuple[tuple[str, ...], dict[str, int]]:
    """The class list and name -> index map of a split: `classes` (the model's or recipe's
    labels) when given, so every split of a dataset shares one mapping, else the sorted names
    `found`. A name outside `classes` is an error naming it (a class absent from a split is
    fine)."""
    found = set(found)
    if classes is None:
        classes = tuple(sorted(found))
    unknown = sorted(found - set(classes))
    if unknown:
        raise ConfigError(
            f"{where}: class name(s) {unknown} are not among the model's labels {list(classes)}; "
            "fix the annotations or the labels (config.yaml `labels`)"
        )
    return tuple(classes), {name: i for i, name in enumerate(classes)}


def read_voc_xml(path: Path) -> tuple[str, list[tuple[str, list[float], bool]]]:
    """The image file name and (class name, box, difficult) triples of one VOC annotation."""
    root = ET.parse(path).getroot()
    objects = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        box = [float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
        difficult = obj.findtext("difficult", "0").strip() in ("1", "true")
        objects.append((obj.findtext("name", "").strip(), box, difficult))
    return root.findtext("filename", path.stem + ".jpg").strip(), objects


def split_list(root: Path, split: str) -> Path:
    """`ImageSets/Main/<split>.txt` of a VOC folder; missing, an error that lists the splits
    there and the flags that choose one."""
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        there = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise DatasetNotFoundError(
            f"{path}: no split list {split!r} (splits here: {there or 'none'}); a VOC folder "
            "holds JPEGImages/, Annotations/ and ImageSets/Main/<split>.txt; choose another "
            "split with --split / --val-split (an empty --val-split holds out training images)"
        )
    return path


def load_voc(
    root: Path, split: str, classes: tuple[str, ...] | None = None
) -> tuple[list[Sample], tuple[str, ...]]:
    """VOC layout: JPEGImages/, Annotations/, ImageSets/Main/<split>.txt."""
    root = Path(root)
    names = split_list(root, split).read_text().split()
    parsed = [read_voc_xml(root / "Annotations" / f"{n}.xml") for n in names]
    found = {c for _, objs in parsed for c, _, _ in objs}
    classes, index = class_index(found, classes, f"{root} split {split!r}")
    samples = []
    for name, (filename, objs) in zip(names, parsed, strict=True):
        image = root / "JPEGImages" / filename
        if not image.is_file():
            image = root / "JPEGImages" / f"{name}.jpg"
        boxes = [b for _, b, _ in objs]
        samples.append(_sample(image, boxes, [index[c] for c, _, _ in objs], [d for *_, d in objs]))
    return samples, classes


def load_coco(
    annotations: Path, image_dir: Path | None = None, classes: tuple[str, ...] | None = None
) -> tuple[list[Sample], tuple[str, ...]]:
    """COCO instances JSON (bbox is x, y, w, h); images under `image_dir` (default: beside it).
    Categories map by name to `classes` when given (else the file's, in id order); `iscrowd`
    boxes are marked difficult."""
    annotations = Path(annotations)
    if not annotations.is_file():
        raise DatasetNotFoundError(f"{annotations}: COCO annotation file not found (--data)")
    data = json.loads(annotations.read_text())
    image_dir = Path(image_dir) if image_dir else annotations.parent
    cats = sorted(data["categories"], key=lambda c: c["id"])
    if classes is None:
        classes = tuple(c["name"] for c in cats)
    classes, by_name = class_index((c["name"] for c in cats), classes, str(annotations))
    index = {c["id"]: by_name[c["name"]] for c in cats}
    per_image: dict[int, list] = {im["id"]: [] for im in data["images"]}
    for ann in data.get("annotations", []):
        x, y, w, h = ann["bbox"]
        crowd = bool(ann.get("iscrowd", 0))
        per_image[ann["image_id"]].append((index[ann["category_id"]], [x, y, x + w, y + h], crowd))
    samples = [
        _sample(
            image_dir / im["file_name"],
            [b for _, b, _ in per_image[im["id"]]],
            [c for c, _, _ in per_image[im["id"]]],
            [d for *_, d in per_image[im["id"]]],
        )
        for im in data["images"]
    ]
    return samples, classes


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


def load_yolo(
    root: Path, split: str, classes: tuple[str, ...] | None = None
) -> tuple[list[Sample], tuple[str, ...]]:
    """YOLO layout: images/<split>/*, labels/<split>/*.txt (`cls cx cy w h`, normalised);
    the dataset's class names map by name to `classes` when given."""
    root = Path(root)
    own = _yolo_classes(root)
    classes, index = class_index(own, classes or own, str(root))
    folder = root / "images" / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: no YOLO split {split!r} (--split / --val-split)")
    samples = []
    for image in sorted(folder.iterdir()):
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
            if not 0 <= c < len(own):
                raise ConfigError(f"{label}: class id {c} outside the {len(own)} names listed")
            labels.append(index[own[c]])
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


def load_deeppcb(
    root: Path, split: str, classes: tuple[str, ...] | None = None
) -> tuple[list[Sample], tuple[str, ...]]:
    """DeepPCB split `PCBData/<split>.txt`: `groupG/G/N.jpg groupG/G_not/N.txt` (image N_test)."""
    base = Path(root)
    base = base / "PCBData" if (base / "PCBData").is_dir() else base
    if classes is not None and tuple(classes) != DEEPPCB_CLASSES:
        raise ConfigError(f"DeepPCB's classes are {list(DEEPPCB_CLASSES)}, not {list(classes)}")
    if not (base / f"{split}.txt").is_file():
        raise DatasetNotFoundError(f"{base / f'{split}.txt'}: no DeepPCB split {split!r}")
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


def load_dataset(
    fmt: str, root: Path, split: str, classes: tuple[str, ...] | None = None
) -> tuple[list[Sample], tuple[str, ...]]:
    """Read a split: voc | coco (a JSON file, or a dir with <split>.json) | yolo | deeppcb;
    class names map to `classes` (the model's labels) when given."""
    root = Path(root)
    if fmt == "voc":
        return load_voc(root, split, classes)
    if fmt == "coco":
        path = root if root.suffix == ".json" else root / f"{split}.json"
        return load_coco(path, path.parent if root.suffix == ".json" else root / split, classes)
    if fmt == "yolo":
        return load_yolo(root, split, classes)
    if fmt == "deeppcb":
        return load_deeppcb(root, split, classes)
    raise ConfigError(f"unknown detection format {fmt!r}: voc | coco | yolo | deeppcb")


def split_holdout(samples: list[Sample], count: int, seed: int = 0) -> tuple[list, list]:
    """A seeded (train, held-out) split of `samples`."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [s for i, s in enumerate(samples) if i not in held], [samples[i] for i in sorted(held)]
