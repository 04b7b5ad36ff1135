"""Human-viewable renderings: boxes and masks over the image, heatmaps, PNG encoding."""

from __future__ import annotations

import cv2
import numpy as np

from vision.types import DetectionResult, Image, SegmentationResult

# Distinct RGB colours, indexed by class id (cycled).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def color_for(class_id: int) -> tuple[int, int, int]:
    """The palette colour (RGB) of a class id."""
    return PALETTE[class_id % len(PALETTE)]


def to_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """Any HxW / HxWxC image as HxWx3 RGB uint8 (uint16 and float min-max scaled)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype != np.uint8:
        values = pixels.astype(np.float32)
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo if hi > lo else 1.0
        pixels = ((values - lo) * (255.0 / span)).round().astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _line_width(rgb: np.ndarray) -> int:
    return max(1, round(sum(rgb.shape[:2]) / 2 * 0.003))


def _put_label(rgb: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Text on a filled box of `color`, above (x, y) when there is room, else below."""
    thick = _line_width(rgb)
    font_scale = max(0.4, thick / 3)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    top = y - th - base - 2 if y - th - base - 2 >= 0 else y
    cv2.rectangle(rgb, (x, top), (x + tw + 2, top + th + base + 2), color, -1)
    ink = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    origin = (x + 1, top + th + 1)
    cv2.putText(rgb, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1, cv2.LINE_AA)


def _draw_detections(rgb: np.ndarray, result: DetectionResult) -> None:
    thick = _line_width(rgb)
    for det in result.detections:
        color = color_for(det.class_id)
        p1 = (int(round(det.x1)), int(round(det.y1)))
        p2 = (int(round(det.x2)), int(round(det.y2)))
        cv2.rectangle(rgb, p1, p2, color, thick, cv2.LINE_AA)
        _put_label(rgb, f"{det.label} {det.score:.2f}", p1[0], p1[1], color)


def _draw_masks(rgb: np.ndarray, result: SegmentationResult, alpha: float) -> np.ndarray:
    out = rgb.astype(np.float32)
    for item in result.masks:
        if item.mask.shape != rgb.shape[:2] or not item.mask.any():
            continue
        color = np.asarray(color_for(item.class_id), dtype=np.float32)
        out[item.mask] = out[item.mask] * (1.0 - alpha) + color * alpha
    blended = out.round().clip(0, 255).astype(np.uint8)
    for item in result.masks:
        if item.mask.shape != rgb.shape[:2] or not item.mask.any():
            continue
        color = color_for(item.class_id)
        contours, _ = cv2.findContours(
            item.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(blended, contours, -1, color, _line_width(rgb))
        ys, xs = np.nonzero(item.mask)
        _put_label(blended, f"{item.label} {item.score:.2f}", int(xs.min()), int(ys.min()), color)
    return blended


def draw_overlay(
    image: Image, result: DetectionResult | SegmentationResult, alpha: float = 0.45
) -> np.ndarray:
    """The image (RGB uint8) with boxes and labels, or semi-transparent class masks, drawn on."""
    rgb = to_rgb_uint8(image.pixels).copy()
    if isinstance(result, SegmentationResult):
        return _draw_masks(rgb, result, alpha)
    _draw_detections(rgb, result)
    return rgb


def heatmap_overlay(image: Image, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A 0..1 HxW heat map in JET colours blended over the image; RGB uint8."""
    rgb = to_rgb_uint8(image.pixels)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != rgb.shape[:2]:
        heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    levels = (np.nan_to_num(heat).clip(0.0, 1.0) * 255).round().astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)


def encode_png_rgb(rgb: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 RGB (or HxW grey) uint8 image."""
    array = np.asarray(rgb)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()
