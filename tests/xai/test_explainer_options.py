"""Explainer (torch-free) options: class filter, limit, and the one-run check for segmenters.

Stand-in explain graphs from tests/serving/tiny_models.py (their "CAM" is the grey level).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.serving import tiny_models as tiny
from vision.config import ExplainSpec
from vision.errors import InvalidInputError
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.types import Image
from vision.xai.explainer import Explainer

EXPLAIN = ExplainSpec(file="model.explain.onnx", max_targets=3)


def _segmenter(tmp_path, gain: float) -> tuple[Explainer, OnnxModel]:
    config = dataclasses.replace(tiny.segmenter_config("s"), explain=EXPLAIN)
    plain = OnnxModel(tiny.brightness_segmenter(tmp_path / "model.onnx"))
    graph = tiny.explain_graph(tmp_path / "x.onnx", "segmentation", 64, gain=gain)
    return Explainer(config, OnnxModel(graph)), plain


def _bright_square() -> Image:
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[10:30, 20:40] = 255
    return Image(pixels)


@pytest.mark.parametrize(("gain", "same"), [(20.0, True), (21.0, False)])
def test_check_outputs_bit_identical_only(tmp_path, gain, same):
    explainer, plain = _segmenter(tmp_path, gain)
    assert explainer.check_outputs(plain) is same
    assert explainer.same_outputs is same
    assert explainer.yields_predictions([]) is same  # one foreground class
    assert explainer.yields_predictions([0]) is same


def test_explain_classes_found_requested_and_limited(tmp_path):
    explainer, plain = _segmenter(tmp_path, 20.0)
    tensor, meta = Pipeline(explainer.config).preprocess(_bright_square())
    result = Pipeline(explainer.config).postprocess(
        {k: v[0] for k, v in plain.run({"images": tensor[None]}).items()}, meta
    )
    found = explainer.explain_classes(tensor, meta, result)
    assert [e.class_id for e in found] == [1]
    assert found[0].heat.shape == (48, 64)
    assert [e.class_id for e in explainer.explain_classes(tensor, meta, result, [1, 0])] == [1, 0]
    assert len(explainer.explain_classes(tensor, meta, result, [1, 0], max_findings=1)) == 1
    with pytest.raises(InvalidInputError):
        explainer.explain_classes(tensor, meta, result, [2])
    with pytest.raises(InvalidInputError):
        explainer.limit(-1)
    assert explainer.limit(0) == 3 and explainer.limit(2) == 2 and explainer.limit(10) == 3


def test_explain_detections_class_filter_and_order(tmp_path):
    config = dataclasses.replace(tiny.detector_config("d"), explain=EXPLAIN)
    table = np.concatenate([tiny.DETECTOR_BOXES.T, tiny.DETECTOR_SCORES.T], axis=0)[None]
    plain = OnnxModel(
        tiny.fixed_box_detector(tmp_path / "m.onnx", tiny.DETECTOR_BOXES, tiny.DETECTOR_SCORES, 128)
    )
    graph = tiny.explain_graph(tmp_path / "x.onnx", "detection", 128, table.astype(np.float32))
    explainer = Explainer(config, OnnxModel(graph))
    assert not explainer.check_outputs(plain)  # detectors: targets come from the plain run
    pipeline = Pipeline(config)
    tensor, meta = pipeline.preprocess(Image(np.full((100, 150, 3), 80, np.uint8)))
    result = pipeline.postprocess(
        {k: v[0] for k, v in plain.run({"images": tensor[None]}).items()}, meta
    )
    every = explainer.explain_detections(tensor, meta, result)
    assert [e.label for e in every] == ["defect", "dust"]  # highest score first
    assert all(e.heat.shape == (100, 150) for e in every)
    dust = explainer.explain_detections(tensor, meta, result, class_ids=[1])
    assert [e.detection.label for e in dust] == ["dust"]
    assert len(explainer.explain_detections(tensor, meta, result, max_findings=1)) == 1
