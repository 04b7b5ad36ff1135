"""CAM post-processing in numpy, shared by the server and the tools (no torch).

The explain graph outputs RAW CAMs [N, h, w] at the target layer's resolution. Two paths:

* `normalize` then `upsample`: pytorch-grad-cam's exact order (ReLU, per-image min-max,
  bilinear resize to the model input), used for parity checks;
* `heatmap`: for serving. ReLU, bilinear to the model input, undo the letterbox / stretch
  (`PreprocessMeta`) to the original image size, then min-max over the image only, so padded
  borders never set the scale.
"""

from __future__ import annotations

import cv2
import numpy as np

from vision.postprocess import to_original_maps
from vision.types import PreprocessMeta

EPS = 1e-7  # as pytorch-grad-cam's scale_cam_image


def _batched(cams: np.ndarray) -> np.ndarray:
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim == 2:
        return cams[None]
    if cams.ndim != 3:
        raise ValueError(f"CAMs must be [h, w] or [N, h, w], got {list(cams.shape)}")
    return cams


def minmax(cams: np.ndarray) -> np.ndarray:
    """Per-image (x - min) / (max - min + eps); [N, h, w] or [h, w], float32."""
    batch = _batched(cams)
    low = batch.min(axis=(1, 2), keepdims=True)
    high = (batch - low).max(axis=(1, 2), keepdims=True)
    out = (batch - low) / (high + EPS)
    return out.astype(np.float32).reshape(np.shape(cams))


def normalize(cams: np.ndarray) -> np.ndarray:
    """ReLU then per-image min-max to [0, 1]."""
    return minmax(np.maximum(np.asarray(cams, dtype=np.float32), 0.0))


def upsample(cams: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (cv2, as pytorch-grad-cam) of [N, h, w] or [h, w] to (height, width)."""
    batch = _batched(cams)
    out = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in batch])
    return out if np.ndim(cams) == 3 else out[0]


def heatmap(cam: np.ndarray, meta: PreprocessMeta) -> np.ndarray:
    """One raw CAM [h, w] -> [H, W] float32 in [0, 1] over the original image."""
    positive = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    original = to_original_maps(positive[None], meta)[0]  # ours: a new array, or `positive`
    return _minmax_in_place(original)


def _minmax_in_place(heat: np.ndarray) -> np.ndarray:
    """`minmax` of one float32 map, bit for bit, written over it: one pass fewer and no
    temporaries (0.32 -> 0.14 ms for a 640x480 map)."""
    low = heat.min()
    np.subtract(heat, low, out=heat)
    np.divide(heat, heat.max() + np.float32(EPS), out=heat)
    return heat


def heatmaps(cams: np.ndarray, metas: list[PreprocessMeta]) -> list[np.ndarray]:
    """A batch of raw CAMs [N, h, w] with one PreprocessMeta each -> N heat maps."""
    return [heatmap(c, m) for c, m in zip(_batched(cams), metas, strict=True)]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (1.0 when both are constant and equal)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    if denom == 0.0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float((x * y).sum() / denom)
