"""One model's pre- and post-processing, as its config describes (no inference here)."""

from __future__ import annotations

import numpy as np

from vision import postprocess as post
from vision.config import ModelConfig
from vision.errors import ConfigError
from vision.preprocess import Preprocessor
from vision.types import DetectionResult, Image, PreprocessMeta, SegmentationResult


class Pipeline:
    """Image -> input tensor (one item, no batch dim) and outputs (one item) -> result."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._pre = Preprocessor(config.input, config.preprocess)

    def preprocess(self, image: Image) -> tuple[np.ndarray, PreprocessMeta]:
        """One input item in config.input.layout (CHW or HWC) and dtype, with its meta."""
        return self._pre(image.pixels)

    def postprocess(
        self, outputs: dict[str, np.ndarray], meta: PreprocessMeta
    ) -> DetectionResult | SegmentationResult:
        """Detections or class masks in original-image coordinates, for one item."""
        spec = self.config.postprocess
        return post.decode(outputs, meta, spec, self.config.labels)

    def segmentation_probabilities(
        self, outputs: dict[str, np.ndarray], meta: PreprocessMeta
    ) -> np.ndarray:
        """[C, H, W] float32 class probabilities in original-image size (segmentation only)."""
        spec = self.config.postprocess
        if spec.type == "yolov8":
            raise ConfigError(f"model {self.config.name!r} is a detector; it has no probabilities")
        output = post.select_output(outputs, spec.output)
        return post.segmentation_probabilities(output, meta, spec.type)
