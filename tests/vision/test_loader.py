"""`vision.loader`: one latest-version rule, one way to load and run a model version."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.serving.tiny_models import (
    brightness_segmenter,
    build_explainable_repository,
    build_repository,
    segmenter_config,
)
from vision.config import write_config
from vision.errors import ConfigError, ModelNotFoundError
from vision.loader import latest_version, load_model, open_model, version_numbers
from vision.render import encode_png_rgb
from vision.types import DetectionResult, Image, SegmentationResult


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"))


def test_latest_is_the_highest_integer_folder_holding_the_model_file(tmp_path: Path) -> None:
    for name in ("1", "10", "2", "notes"):
        (tmp_path / name).mkdir()
    for name in ("1", "2", "notes"):
        (tmp_path / name / "model.onnx").write_bytes(b"")
    assert version_numbers(tmp_path) == [1, 2]
    assert latest_version(tmp_path) == "2"  # 10 has no model.onnx


def test_no_version_says_where_it_looked_and_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no version folder with model.onnx.*export"):
        latest_version(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        latest_version(tmp_path / "absent")


def test_load_latest_and_a_named_version(repo: Path) -> None:
    assert load_model(repo / "bright").version == "2"
    one = load_model(repo / "bright", 1, providers=("cpu",))
    assert one.version == "1" and one.providers == ["CPUExecutionProvider"]
    assert one.folder == repo / "bright" / "1" and one.explainer is None
    with pytest.raises(ModelNotFoundError, match="version 7 has no model.onnx; versions: 1, 2"):
        load_model(repo / "bright", "7")


def test_predict_runs_decode_preprocess_session_postprocess(repo: Path) -> None:
    model = load_model(repo / "bright")
    pixels = np.zeros((40, 50, 3), np.uint8)
    pixels[:, 25:] = 255
    from_bytes = model.predict(encode_png_rgb(pixels))
    assert isinstance(from_bytes, SegmentationResult)
    mask = {m.class_id: m.mask for m in from_bytes.masks}[1]
    assert mask.shape == (40, 50) and mask[:, 30:].all() and not mask[:, :20].any()
    from_image = model.predict(Image(pixels=pixels))
    assert np.array_equal({m.class_id: m.mask for m in from_image.masks}[1], mask)


def test_detector_predictions_and_a_changed_threshold(repo: Path) -> None:
    model = load_model(repo / "boxes")
    image = Image(pixels=np.zeros((128, 128, 3), np.uint8))
    served = model.predict(image)
    assert isinstance(served, DetectionResult)
    low = model.with_postprocess(score_threshold=0.01).predict_many([image, image], batch=1)
    assert len(low) == 2 and len(low[0].detections) > len(served.detections)
    assert model.config.postprocess.score_threshold == 0.3  # the original is unchanged


def test_a_config_naming_a_missing_output_is_a_config_error(tmp_path: Path) -> None:
    config = segmenter_config("wrong")
    post = dataclasses.replace(config.postprocess, image_score_output="nope")
    config = dataclasses.replace(config, postprocess=post)
    path = brightness_segmenter(tmp_path / "1" / "model.onnx")
    with pytest.raises(ConfigError, match="image_score_output 'nope' is not an output"):
        open_model(config, path)


def test_explain_graph_loaded_when_named_required_when_asked(tmp_path: Path) -> None:
    root = build_explainable_repository(tmp_path / "x")
    seg = load_model(root / "bright-x")
    assert seg.explainer is not None and seg.explainer.same_outputs  # checked at load
    assert load_model(root / "bright-x", explain=False).explainer is None
    config = segmenter_config("plain")
    write_config(config, tmp_path / "plain")
    brightness_segmenter(tmp_path / "plain" / "1" / "model.onnx")
    with pytest.raises(ConfigError, match="vision explain-export --model plain"):
        load_model(tmp_path / "plain", explain=True)
    (root / "boxes-x" / "1" / "model.explain.onnx").unlink()
    with pytest.raises(ModelNotFoundError, match="model.explain.onnx named in the config"):
        load_model(root / "boxes-x")
