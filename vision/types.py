"""Plain data passed between decoding, pipelines and the serving layer (no wire format here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # vision.io imports this module: no runtime import back
    from vision.io.dicom_header import DicomHeader


@dataclass
class Image:
    """A decoded image: `pixels` is HxWxC (C = 1 or 3, RGB order), uint8, uint16 or float32.

    For DICOM input, rescale and VOI window are already applied, MONOCHROME1 already inverted;
    `pixel_spacing_mm` is (row spacing, column spacing) from PixelSpacing when the file has it;
    `dicom` is the DICOM header (UIDs, patient/study attributes, geometry), None for other
    formats. Its repr hides every identifier, so the Image's repr may be logged.
    """

    pixels: np.ndarray
    source_format: str = "raw"  # png | jpeg | tiff | bmp | dicom | raw
    pixel_spacing_mm: tuple[float, float] | None = None
    dicom: DicomHeader | None = None

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class PreprocessMeta:
    """What preprocessing did to one image, so outputs can be mapped back to its coordinates.

    Model-input coordinate = original * (scale_x, scale_y) + (pad_x, pad_y).
    """

    original_height: int
    original_width: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    input_height: int
    input_width: int


@dataclass(frozen=True)
class Detection:
    """One box in original-image pixel coordinates (x1, y1, x2, y2)."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    label: str
    anchor: int = -1  # index of the model output row (YOLOv8 layout) it was decoded from


@dataclass
class ClassMask:
    """A binary mask for one class, in original-image size."""

    class_id: int
    label: str
    mask: np.ndarray  # HxW bool
    score: float = 0.0  # mean probability inside the mask (or max for an empty mask)

    @property
    def pixel_area(self) -> int:
        """Number of pixels in the mask."""
        return int(np.count_nonzero(self.mask))


@dataclass
class DetectionResult:
    """The detections of one image."""

    detections: list[Detection] = field(default_factory=list)


@dataclass
class SegmentationResult:
    """The class masks of one image, and its image-level score if the model has one."""

    masks: list[ClassMask] = field(default_factory=list)
    image_score: float | None = None  # the config's image_score_output, when it names one
