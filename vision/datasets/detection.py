"""Detection data: readers for Pascal VOC, COCO JSON, YOLO txt and DeepPCB, plus training sets."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image as PILImage

from vision.io import read_image, to_uint8
from vision.preprocess import convert_channels

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
    raise FileNotFoundError(f"{root}: no classes.txt, obj.names or data.yaml with class names")


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
    raise ValueError(f"unknown detection format {fmt!r}: voc | coco | yolo | deeppcb")


def split_holdout(samples: list[Sample], count: int, seed: int = 0) -> tuple[list, list]:
    """A seeded (train, held-out) split of `samples`."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [s for i, s in enumerate(samples) if i not in held], [samples[i] for i in sorted(held)]


def load_image(path: Path, channels: int) -> np.ndarray:
    """HxWxC uint8 (C = 1 grey or 3 RGB), decoded and channel-converted as the server does."""
    pixels = convert_channels(read_image(path), "GRAY" if channels == 1 else "RGB")
    return to_uint8(pixels)


def letterbox_params(h: int, w: int, out_h: int, out_w: int) -> tuple[float, float, float]:
    """Scale and (centred) padding of a letterbox resize."""
    s = min(out_h / h, out_w / w)
    return s, (out_w - round(w * s)) / 2, (out_h - round(h * s)) / 2


def warp(img: np.ndarray, matrix: np.ndarray, out_h: int, out_w: int, pad: float) -> np.ndarray:
    """Affine-warp an HxWxC image (linear), padding with `pad`."""
    out = cv2.warpAffine(
        img, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=(pad, pad, pad)
    )
    return out[..., None] if out.ndim == 2 else out


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Boxes through an axis-aligned affine (scale + translate) matrix."""
    out = boxes.copy()
    out[:, [0, 2]] = boxes[:, [0, 2]] * matrix[0, 0] + matrix[0, 2]
    out[:, [1, 3]] = boxes[:, [1, 3]] * matrix[1, 1] + matrix[1, 2]
    return out


def clip_boxes(
    boxes: np.ndarray, labels: np.ndarray, h: int, w: int, min_visible: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image; drop boxes with less than `min_visible` of their area left."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    new_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (new_area >= min_visible * np.maximum(area, 1e-6)) & (new_area > 4)
    return clipped[keep], labels[keep]


def _flip_rotate(img: np.ndarray, boxes: np.ndarray, rotate: bool, rng: random.Random):
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        img, boxes = (
            img[:, ::-1],
            np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1),
        )
    if rng.random() < 0.5:
        img, boxes = (
            img[::-1],
            np.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1),
        )
    if rotate and rng.random() < 0.5:  # transpose = rot90 + flip
        img, boxes = img.transpose(1, 0, 2), boxes[:, [1, 0, 3, 2]]
    return np.ascontiguousarray(img), boxes.reshape(-1, 4).astype(np.float32)


class DetectionDataset(torch.utils.data.Dataset):
    """Images in memory; `mode` "crop" (native-scale random crops) or "letterbox" (+ jitter)."""

    def __init__(
        self,
        samples: list[Sample],
        channels: int,
        size: tuple[int, int],
        mode: str = "letterbox",
        train: bool = False,
        rotate: bool = False,
        pad_value: float = 114.0,
        seed: int = 0,
    ) -> None:
        self.samples, self.channels, self.size, self.mode = samples, channels, size, mode
        self.train, self.rotate, self.pad = train, rotate, pad_value
        self.images = [load_image(s.image, channels) for s in samples]
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def _matrix(self, h: int, w: int) -> np.ndarray:
        out_h, out_w = self.size
        if self.mode == "crop":
            s = 1.0
            tx = -self.rng.randint(0, max(w - out_w, 0)) if self.train else 0.0
            ty = -self.rng.randint(0, max(h - out_h, 0)) if self.train else 0.0
            return np.array([[s, 0, tx], [0, s, ty]], dtype=np.float32)
        s, px, py = letterbox_params(h, w, out_h, out_w)
        if self.train:
            s *= self.rng.uniform(0.75, 1.25)
            px = self.rng.uniform(min(0, out_w - w * s), max(0, out_w - w * s))
            py = self.rng.uniform(min(0, out_h - h * s), max(0, out_h - h * s))
        return np.array([[s, 0, px], [0, s, py]], dtype=np.float32)

    def _color(self, img: np.ndarray) -> np.ndarray:
        gain = np.array([self.rng.uniform(0.8, 1.2) for _ in range(img.shape[2])], np.float32)
        bias = self.rng.uniform(-15, 15)
        return np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, sample = self.images[index], self.samples[index]
        boxes, labels = sample.boxes, sample.labels
        if self.train:
            img, boxes = _flip_rotate(img, boxes, self.rotate, self.rng)
        h, w = img.shape[:2]
        matrix = self._matrix(h, w)
        out = warp(img, matrix, *self.size, self.pad)
        if self.train and self.mode == "letterbox":
            out = self._color(out)
        boxes, labels = clip_boxes(transform_boxes(boxes, matrix), labels, *self.size)
        target = np.concatenate([labels[:, None].astype(np.float32), boxes], 1)
        tensor = torch.from_numpy(out.transpose(2, 0, 1).copy()).float() / 255.0
        return tensor, torch.from_numpy(target.reshape(-1, 5))


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list]:
    """Stack images; keep per-image targets ([M, 5]: class, x1, y1, x2, y2) as a list."""
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]
