"""Preprocessing (channels, resize modes, normalisation) and a tiny ONNX model end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from vision.config import InputSpec, ModelConfig, PostprocessSpec, PreprocessSpec
from vision.errors import InvalidInputError
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.types import Image, SegmentationResult


def _config(
    height: int = 64,
    width: int = 64,
    resize: str = "stretch",
    layout: str = "NCHW",
    order: str = "RGB",
    **pre: object,
) -> ModelConfig:
    channels = 1 if order == "GRAY" else 3
    return ModelConfig(
        name="test",
        task="segmentation",
        labels=("background", "thing"),
        input=InputSpec(layout=layout, height=height, width=width, channels=channels),
        preprocess=PreprocessSpec(resize=resize, channel_order=order, **pre),
        postprocess=PostprocessSpec(type="argmax"),
    )


def _image(height: int = 50, width: int = 100, dtype: type = np.uint8) -> Image:
    rng = np.random.default_rng(1)
    return Image(rng.integers(0, 255, (height, width, 3)).astype(dtype))


def test_stretch_layout_dtype_and_normalisation() -> None:
    image = Image(np.full((10, 20, 3), (255, 0, 51), np.uint8))
    config = _config(16, 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    x, meta = Pipeline(config).preprocess(image)
    assert x.shape == (3, 16, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 5, 5], [1.0, -2.0, -0.3], atol=1e-5)
    assert (meta.scale_x, meta.scale_y, meta.pad_x, meta.pad_y) == (1.6, 1.6, 0, 0)
    nhwc, _ = Pipeline(_config(16, 32, layout="NHWC")).preprocess(image)
    assert nhwc.shape == (16, 32, 3) and nhwc.flags.c_contiguous


def test_channel_conversions() -> None:
    rgb = Image(np.full((4, 4, 3), (200, 100, 0), np.uint8))
    bgr, _ = Pipeline(_config(4, 4, order="BGR", scale=1.0)).preprocess(rgb)
    np.testing.assert_allclose(bgr[:, 0, 0], [0, 100, 200])
    grey, _ = Pipeline(_config(4, 4, order="GRAY", scale=1.0)).preprocess(rgb)
    assert grey.shape == (1, 4, 4)
    assert grey[0, 0, 0] == pytest.approx(0.299 * 200 + 0.587 * 100, abs=0.5)
    one = Image(np.full((4, 4, 1), 7, np.uint8))
    three, _ = Pipeline(_config(4, 4, scale=1.0)).preprocess(one)
    np.testing.assert_allclose(three[:, 0, 0], [7, 7, 7])


def test_uint16_matches_uint8() -> None:
    image8 = _image()
    image16 = Image(image8.pixels.astype(np.uint16) * 257)
    pipeline = Pipeline(_config(resize="letterbox"))
    # 8-bit images are resized in 8 bits (rounded, as Ultralytics does): half a level apart,
    # at most, before normalisation by std.
    np.testing.assert_allclose(
        pipeline.preprocess(image16)[0], pipeline.preprocess(image8)[0], atol=0.5 / 255 / 0.2
    )


def test_letterbox_geometry_and_padding() -> None:
    x, meta = Pipeline(_config(64, 64, resize="letterbox", scale=1.0)).preprocess(_image(50, 100))
    assert x.shape == (3, 64, 64)
    assert (meta.scale_x, meta.scale_y, meta.pad_x, meta.pad_y) == (0.64, 0.64, 0, 16)
    assert (meta.original_height, meta.original_width) == (50, 100)
    assert np.all(x[:, :16] == 114) and np.all(x[:, 48:] == 114)


@pytest.mark.parametrize(("height", "width"), [(50, 100), (120, 77), (77, 77), (200, 130)])
def test_letterbox_round_trip_of_a_box(height: int, width: int) -> None:
    pixels = np.zeros((height, width, 3), np.uint8)
    y1, y2, x1, x2 = height // 4, height // 2, width // 3, width * 3 // 4
    pixels[y1:y2, x1:x2] = 255
    config = _config(256, 256, resize="letterbox", scale=1.0, pad_value=0.0)
    x, meta = Pipeline(config).preprocess(Image(pixels))
    assert meta.pad_x == 0 or meta.pad_y == 0
    ys, xs = np.nonzero(x[0] > 127)
    back_x = (np.array([xs.min(), xs.max() + 1]) - meta.pad_x) / meta.scale_x
    back_y = (np.array([ys.min(), ys.max() + 1]) - meta.pad_y) / meta.scale_y
    np.testing.assert_allclose(back_x, [x1, x2], atol=1.0)
    np.testing.assert_allclose(back_y, [y1, y2], atol=1.0)


def test_letterbox_matches_ultralytics_arithmetic() -> None:
    _, meta = Pipeline(_config(640, 640, resize="letterbox")).preprocess(_image(480, 1000))
    gain = min(640 / 480, 640 / 1000)
    assert meta.scale_x == pytest.approx(gain) and meta.scale_y == pytest.approx(gain, rel=1e-3)
    assert meta.pad_x == 0 and meta.pad_y == round((640 - 480 * gain) / 2 - 0.1)


def test_dynamic_size_pads_bottom_right_to_divisor() -> None:
    config = _config(0, 0, resize="none", scale=1.0)
    x, meta = Pipeline(config).preprocess(_image(50, 70))
    assert x.shape == (3, 64, 96)
    assert (meta.input_height, meta.input_width, meta.pad_x, meta.pad_y) == (64, 96, 0, 0)
    assert np.all(x[:, 50:] == 114) and np.all(x[:, :, 70:] == 114)


def test_resize_none_fixed_size() -> None:
    x, meta = Pipeline(_config(64, 128, resize="none")).preprocess(_image(50, 100))
    assert x.shape == (3, 64, 128) and meta.scale_x == 1.0
    with pytest.raises(InvalidInputError, match="larger than the model input"):
        Pipeline(_config(32, 32, resize="none")).preprocess(_image(50, 100))


def _red_threshold_model(path: str) -> None:
    """logits = [0.5 - red, red - 0.5] at half resolution (AveragePool 2x2)."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [-1, 3, 64, 64])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1, 2, 32, 32])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    starts, ends, axes = (
        helper.make_tensor(n, TensorProto.INT64, [1], [v])
        for n, v in (("s", 0), ("e", 1), ("a", 1))
    )
    nodes = [
        helper.make_node("Slice", ["images", "s", "e", "a"], ["red"]),
        helper.make_node("AveragePool", ["red"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Sub", ["pooled", "half"], ["fg"]),
        helper.make_node("Neg", ["fg"], ["bg"]),
        helper.make_node("Concat", ["bg", "fg"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(nodes, "red", [x], [y], [half, starts, ends, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_end_to_end_with_onnx_model(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    _red_threshold_model(str(path))
    model = OnnxModel(path)
    config = dataclasses.replace(_config(64, 64, resize="letterbox"), model_file=str(path))
    pipeline = Pipeline(config)
    pixels = np.zeros((60, 120, 3), np.uint8)
    pixels[20:40, 30:90, 0] = 255
    x, meta = pipeline.preprocess(Image(pixels))
    outputs = {k: v[0] for k, v in model.run({"images": x[None]}).items()}
    result = pipeline.postprocess(outputs, meta)
    assert isinstance(result, SegmentationResult)
    assert [m.class_id for m in result.masks] == [1]
    mask = result.masks[0].mask
    assert mask.shape == (60, 120)
    truth = np.zeros_like(mask)
    truth[20:40, 30:90] = True
    assert np.count_nonzero(mask != truth) <= 0.03 * truth.sum()
    probs = pipeline.segmentation_probabilities(outputs, meta)
    assert probs.shape == (2, 60, 120) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
