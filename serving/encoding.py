"""Encoding a prediction for the wire: masks as PNG or run lengths, overlay and heat-map PNGs.

Transport code (servicers, HTTP routes) calls `encode_prediction` in a worker thread after the
data plane has answered; the data plane itself returns domain results only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from serving.dataplane import Prediction
from vision.masks import encode_png, encode_rle
from vision.render import draw_overlay, encode_png_rgb, heatmap_overlay
from vision.types import SegmentationResult

MASK_ENCODINGS = ("png", "rle")


@dataclass(frozen=True)
class WireOptions:
    """What the client asked to receive besides the findings."""

    overlay: bool = False  # the image with the findings drawn, as PNG
    mask_encoding: str = "png"  # png | rle
    heat_overlays: bool = False  # each heat map blended over the image, as PNG


@dataclass
class EncodedPrediction:
    """The wire pieces of a prediction; lists are aligned with masks and explanations."""

    masks: list[bytes | list[int]] = field(default_factory=list)
    overlay_png: bytes = b""
    heat_overlays: list[bytes] = field(default_factory=list)


def encode_prediction(prediction: Prediction, options: WireOptions) -> EncodedPrediction:
    """Encode masks and render the overlays asked for.

    The time spent is added to the prediction's timings: mask and overlay encoding to
    `postprocess_ms` (or `explain_ms` when the explain graph made the masks), heat-map overlays
    to `explain_ms`, both to `total_ms`.
    """
    start = time.perf_counter()
    encoded = EncodedPrediction()
    result = prediction.result
    if isinstance(result, SegmentationResult):
        encode = encode_rle if options.mask_encoding == "rle" else encode_png
        encoded.masks = [encode(m.mask) for m in result.masks]
    if options.overlay:
        encoded.overlay_png = encode_png_rgb(draw_overlay(prediction.image, result))
    findings_ms = (time.perf_counter() - start) * 1000.0
    heat_start = time.perf_counter()
    if options.heat_overlays:
        encoded.heat_overlays = [
            encode_png_rgb(heatmap_overlay(prediction.image, e.heat))
            for e in prediction.explanations
        ]
    heat_ms = (time.perf_counter() - heat_start) * 1000.0
    _add_time(prediction.timings, findings_ms, heat_ms)
    return encoded


def _add_time(timings: dict[str, float], findings_ms: float, heat_ms: float) -> None:
    stage = "postprocess_ms" if "postprocess_ms" in timings else "explain_ms"
    timings[stage] = timings.get(stage, 0.0) + findings_ms
    if heat_ms:
        timings["explain_ms"] = timings.get("explain_ms", 0.0) + heat_ms
    timings["total_ms"] = timings.get("total_ms", 0.0) + findings_ms + heat_ms
