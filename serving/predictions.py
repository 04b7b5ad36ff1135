"""What the data plane takes and returns, with no wire format: image sources, options, results.

`serving.dataplane` re-exports every name here; transports import them from either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from serving.explaining import ExplainOptions
from serving.volumes import VolumePrediction
from vision.errors import InvalidInputError
from vision.io import decode_image, image_from_raw
from vision.types import DetectionResult, Image, SegmentationResult
from vision.xai.explainer import Explanation

__all__ = [
    "ImageInput",
    "ImageSource",
    "InferResult",
    "PredictOptions",
    "Prediction",
    "ResultObserver",
    "ServedResult",
    "decode",
]


@dataclass(frozen=True)
class ImageSource:
    """An image as a client sent it: encoded bytes, or raw pixels with shape and dtype."""

    encoded: bytes | None = None
    raw: bytes | None = None
    shape: tuple[int, ...] = ()
    dtype: str = ""


def decode(source: ImageSource, max_pixels: int, dicom_window: bool = True) -> Image:
    """The `Image` in `source` (sniffed encoded bytes, or raw pixels); InvalidInputError if none."""
    if source.encoded is not None:
        return decode_image(source.encoded, max_pixels, dicom_window=dicom_window)
    if source.raw is not None:
        return image_from_raw(source.raw, source.shape, source.dtype, max_pixels)
    raise InvalidInputError("the request has no image: set image.encoded or image.raw")


@dataclass(frozen=True)
class PredictOptions:
    """Per-request overrides of the model's postprocessing, and heat maps when asked."""

    score_threshold: float | None = None
    iou_threshold: float | None = None
    explain: ExplainOptions | None = None  # None: no heat maps


@dataclass
class Prediction:
    """A result in original-image coordinates, with the timings of each stage (ms)."""

    model: str
    version: str
    image: Image
    result: DetectionResult | SegmentationResult
    timings: dict[str, float] = field(default_factory=dict)
    explanations: list[Explanation] = field(default_factory=list)
    explain_method: str = ""


@dataclass(frozen=True)
class InferResult:
    """Raw output tensors of a KServe inference, and the version that made them."""

    model: str
    version: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class ServedResult:
    """What a result observer is told after each successful prediction or explanation.

    `api` is detection / segmentation / explain / segment_volume; `origin` names the caller
    (vision.v1, dicom, stream, ...). The prediction holds the decoded image, with its DICOM header
    when it had one (for segment_volume: a `VolumePrediction` with the assembled volume).
    """

    api: str
    origin: str
    prediction: Prediction | VolumePrediction


ResultObserver = Callable[[ServedResult], None]
ImageInput = Image | ImageSource
