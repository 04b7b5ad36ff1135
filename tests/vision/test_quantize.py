"""`vision.quantize`: the one static INT8 quantiser of both tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vision.quantize import CalibrationReader, Int8Options, quantize_int8
from vision.runtime import OnnxModel


def _conv_then_scale(path: Path) -> Path:
    """images [N,3,16,16] -> Conv (3x3, 4 channels) -> Mul by a constant -> out."""
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Mul", ["c", "k"], ["out"]),
        ],
        "conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 16, 16])],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array(0.5, np.float32), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_calibration_reader_gives_each_batch_then_none_and_rewinds() -> None:
    reader = CalibrationReader("images", [np.zeros((1, 3)), np.ones((2, 3))])
    assert reader.get_next()["images"].shape == (1, 3)
    assert reader.get_next()["images"].dtype == np.float32
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next() is not None


def test_int8_keeps_outputs_close_and_only_quantises_the_ops_asked(tmp_path: Path) -> None:
    source = _conv_then_scale(tmp_path / "model.onnx")
    rng = np.random.default_rng(1)
    calib = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(4)]
    every = quantize_int8(source, calib, tmp_path / "all.onnx")
    convs = quantize_int8(source, calib, tmp_path / "conv.onnx", op_types=("Conv",))
    ops = {p.name: [n.op_type for n in onnx.load(str(p)).graph.node] for p in (every, convs)}
    assert all("QuantizeLinear" in found for found in ops.values())
    feeds = {"images": calib[0]}
    want = OnnxModel(source).run(feeds)["out"]
    for path in (every, convs):
        got = OnnxModel(path).run(feeds)["out"]
        assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    assert not (tmp_path / "conv.pre.onnx").exists()


def test_variants_write_the_operators_they_name_and_stay_close(tmp_path: Path) -> None:
    source = _conv_then_scale(tmp_path / "model.onnx")
    rng = np.random.default_rng(2)
    calib = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(4)]
    feeds = {"images": calib[0]}
    want = OnnxModel(source).run(feeds)["out"]
    variants = {
        "qoperator-pc": Int8Options(quant_format="qoperator"),
        "qdq-pt-rr": Int8Options(per_channel=False, reduce_range=True),
        "qdq-pc-s8": Int8Options(signed_activations=True),
    }
    for label, options in variants.items():
        assert options.label == label
        path = quantize_int8(source, calib, tmp_path / f"{label}.onnx", ("Conv",), options)
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert ("QLinearConv" in ops) == (options.quant_format == "qoperator"), label
        got = OnnxModel(path).run(feeds)["out"]
        assert np.abs(got - want).max() < 0.1 * np.abs(want).max(), label


def test_an_unknown_format_says_which_exist(tmp_path: Path) -> None:
    source = _conv_then_scale(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="qdq"):
        quantize_int8(source, [], tmp_path / "x.onnx", options=Int8Options(quant_format="int4"))


def _conv_then_sigmoid(path: Path) -> Path:
    """images [N,3,16,16] -> Conv (3x3, 4 channels) -> Sigmoid -> out (nothing to fuse)."""
    _conv_then_scale(path)
    model = onnx.load(str(path))
    del model.graph.node[1]
    model.graph.node.append(helper.make_node("Sigmoid", ["c"], ["out"]))
    del model.graph.initializer[1]
    onnx.save(model, str(path))
    return path


def test_float_tail_quantises_up_to_the_last_conv_and_leaves_the_rest_float(tmp_path: Path) -> None:
    source = _conv_then_sigmoid(tmp_path / "model.onnx")
    calib = [np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32) for _ in range(2)]
    options = Int8Options(float_tail=True)
    assert options.label == "qdq-pc-tail"
    path = quantize_int8(source, calib, tmp_path / "tail.onnx", ("Conv",), options)
    nodes = onnx.load(str(path)).graph.node
    producer = {out: n for n in nodes for out in n.output}
    assert producer["out"].op_type == "Sigmoid"  # after the last Conv: float, unquantised
    conv_input = producer[next(n for n in nodes if n.op_type == "Conv").input[0]]
    assert conv_input.op_type == "DequantizeLinear"  # the conv is quantised
    everything = quantize_int8(source, calib, tmp_path / "all.onnx", options=Int8Options())
    assert producer_of(everything, "out") == "DequantizeLinear"  # without it: Sigmoid in int8


def producer_of(path: Path, name: str) -> str:
    return next(n.op_type for n in onnx.load(str(path)).graph.node if name in n.output)
