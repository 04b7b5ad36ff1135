"""Detection training sets: letterbox / crop views with augmentation, and batching (torch).

The readers (VOC, COCO, YOLO, DeepPCB) live in `vision.datasets.detection`.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import torch

from vision.datasets.detection import Sample
from vision.datasets.images import load_image


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
