"""Segmentation training views: samples at model input size through the serving Preprocessor,
label maps on the input grid, and channel statistics.

The readers (DRIVE, magnetic-tile, image+mask folders, splits) live in
`vision.datasets.segmentation`.
"""

from __future__ import annotations

import cv2
import numpy as np

from vision.config import ModelConfig
from vision.datasets.segmentation import Sample
from vision.preprocess import Preprocessor, convert_channels
from vision.types import PreprocessMeta


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map."""
    out = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return out.astype(np.int64)


def to_input_grid(labels: np.ndarray, meta: PreprocessMeta) -> np.ndarray:
    """A label map over the original image -> over the model input (same scale and padding as
    the image; nearest neighbour; padding is 0)."""
    out = np.zeros((meta.input_height, meta.input_width), np.int64)
    w = max(1, int(round(meta.original_width * meta.scale_x)))
    h = max(1, int(round(meta.original_height * meta.scale_y)))
    x0, y0 = int(round(meta.pad_x)), int(round(meta.pad_y))
    h, w = min(h, meta.input_height - y0), min(w, meta.input_width - x0)
    out[y0 : y0 + h, x0 : x0 + w] = resize_mask(labels, h, w)
    return out


def prepare(sample: Sample, config: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training view of a sample: CxHxW input (the serving Preprocessor, so training and serving
    match exactly), HxW labels and HxW FOV (the image's area, without letterbox padding), all
    at model input size (nearest for labels)."""
    x, meta = Preprocessor(config.input, config.preprocess)(sample.image)
    mask = to_input_grid(sample.mask, meta)
    fov = np.ones(sample.mask.shape, np.int64) if sample.fov is None else sample.fov
    return x, mask, to_input_grid(fov.astype(np.int64), meta) > 0


def channel_stats(samples: list[Sample], channel_order: str) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixel values scaled to [0, 1]."""
    pixels = (
        np.concatenate(
            [
                convert_channels(s.image, channel_order).reshape(
                    -1, 1 if channel_order == "GRAY" else 3
                )
                for s in samples
            ]
        ).astype(np.float64)
        / 255.0
    )
    return [round(float(v), 4) for v in pixels.mean(0)], [round(float(v), 4) for v in pixels.std(0)]
