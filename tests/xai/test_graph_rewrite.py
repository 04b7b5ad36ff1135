"""Image-only factors of the K-target backward formed once (vision.xai.graph_rewrite).

On a small graph built here: ``Mul(Mul(g, a), b)`` with ``g`` from the targets becomes
``Mul(g, Mul(a, b))`` with the same outputs up to rounding; products that another node reads, or
that involve no target, are left alone. The bundled blood-cells graph is folded already.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from vision.paths import PROJECT_ROOT
from vision.xai import graph_rewrite

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _graph(extra_reader: bool = False):
    """images [1, 8], target_class [K] -> cam [K, 8] = (float(class) * sigmoid(x)) * (x + 1)."""
    nodes = [
        helper.make_node("Cast", ["target_class"], ["cls"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["cls", "axis"], ["g"]),
        helper.make_node("Sigmoid", ["images"], ["a"]),
        helper.make_node("Add", ["images", "one"], ["b"]),
        helper.make_node("Mul", ["g", "a"], ["ga"]),
        helper.make_node("Mul", ["ga", "b"], ["cam"]),
    ]
    outputs = [helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["K", 8])]
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["ga"], ["other"]))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, ["K", 8]))
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("target_class", TensorProto.INT64, ["K"]),
        ],
        outputs,
        [
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    images = np.linspace(-3, 3, 8, dtype=np.float32)[None]
    return session.run(None, {"images": images, "target_class": np.array([0, 1, 2, 5])})


def test_image_factors_are_formed_once_and_give_the_same_cam(tmp_path) -> None:
    model = _graph()
    want = _run(model)
    assert graph_rewrite.fold_image_factors(model) == 1
    muls = [n for n in model.graph.node if n.op_type == "Mul"]
    on_targets = graph_rewrite._on_targets(model.graph)
    assert sum(bool(set(n.input) & on_targets) for n in muls) == 1  # one product per target
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(_run(model)[0], want[0], rtol=1e-6)
    path = tmp_path / "g.onnx"
    onnx.save(_graph(), str(path))
    assert graph_rewrite.rewrite_explain_graph(path) == {"image_factors": 1}
    assert graph_rewrite.rewrite_explain_graph(path) == {"image_factors": 0}  # done once


def test_a_product_read_elsewhere_is_left_alone() -> None:
    model = _graph(extra_reader=True)
    assert graph_rewrite.fold_image_factors(model) == 0


def test_the_bundled_detector_graph_is_folded() -> None:
    graph = PROJECT_ROOT / "models" / "blood-cells" / "1" / "model.explain.onnx"
    assert graph_rewrite.fold_image_factors(onnx.load(str(graph))) == 0
