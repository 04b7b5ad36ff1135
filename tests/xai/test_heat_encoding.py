"""Heat maps on the wire: `heat_to_float16_bytes` gives numpy's float16 bits (issue 19 item 4).

The conversion runs in ONNX Runtime (vectorised); the reply must stay byte for byte what
numpy's round-to-nearest-even ``astype("<f2")`` gave, subnormal halves and ties included.
"""

from __future__ import annotations

import numpy as np
import pytest

from vision.postprocess import to_original_maps
from vision.xai.explainer import heat_to_float16_bytes

# Exact halves, ties between halves, subnormal and underflowing values, the top of [0, 1].
EDGES = [0.0, 1.0, 0.5, 1e-8, 2.98e-8, 5.96e-8, 6.0e-8, 3e-5, 6.1e-5, 1e-4, 0.99999, 1 / 3]


def _numpy(heat: np.ndarray) -> bytes:
    return np.ascontiguousarray(heat, dtype="<f2").tobytes()


@pytest.mark.parametrize("power", [1, 8])  # 8: most values subnormal as float16
def test_heat_map_bytes_equal_numpy_float16(power: int) -> None:
    heat = np.random.default_rng(power).random((480, 640), dtype=np.float32) ** power
    heat[0, : len(EDGES)] = EDGES
    assert heat_to_float16_bytes(heat) == _numpy(heat)


def test_every_float16_tie_rounds_as_numpy() -> None:
    halves = np.arange(0, 0x3C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = ((halves[:-1] + halves[1:]) / 2).reshape(1, -1)  # exactly between two halves
    assert heat_to_float16_bytes(ties) == _numpy(ties)


def test_strided_and_float64_maps() -> None:
    heat = np.random.default_rng(0).random((60, 80))  # float64: rounded once, by numpy
    assert heat_to_float16_bytes(heat) == _numpy(heat)
    heat = heat.astype(np.float32)
    assert heat_to_float16_bytes(heat) == _numpy(heat)
    assert heat_to_float16_bytes(heat[::2, ::3]) == _numpy(heat[::2, ::3])
    assert heat_to_float16_bytes(heat.T) == _numpy(heat.T)


def test_the_embedded_cast_model_is_the_one_onnx_builds() -> None:
    """A server install has no `onnx`: the model is embedded, and must be exactly this one."""
    onnx = pytest.importorskip("onnx")
    from vision.xai.explainer import FLOAT16_CAST_ONNX

    helper, proto = onnx.helper, onnx.TensorProto
    node = helper.make_node("Cast", ["x"], ["y"], to=proto.FLOAT16)
    graph = helper.make_graph(
        [node],
        "float16_cast",
        [helper.make_tensor_value_info("x", proto.FLOAT, None)],
        [helper.make_tensor_value_info("y", proto.FLOAT16, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert model.SerializeToString() == FLOAT16_CAST_ONNX


def test_heat_maps_encode_without_the_onnx_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from vision.xai import explainer

    explainer._float16_cast.cache_clear()
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails
    heat = np.random.default_rng(3).random((20, 30), dtype=np.float32)
    assert heat_to_float16_bytes(heat) == _numpy(heat)


def test_heatmap_min_max_in_place_is_minmax_bit_for_bit() -> None:
    """`heatmap` normalises the map it made in place; the values are `minmax`'s exactly."""
    from vision.types import PreprocessMeta
    from vision.xai import cam as cam_ops

    rng = np.random.default_rng(5)
    meta = PreprocessMeta(480, 640, 0.65, 0.65, 0.0, 52.0, 416, 416)
    same = PreprocessMeta(52, 52, 1.0, 1.0, 0.0, 0.0, 52, 52)  # no resize: its own ReLU copy
    for scale in (1e-6, 1.0, 30.0):
        raw = (rng.standard_normal((52, 52)) * scale).astype(np.float32)
        for m in (meta, same):
            positive = np.maximum(raw, 0.0)
            want = cam_ops.minmax(to_original_maps(positive[None], m)[0])
            assert np.array_equal(cam_ops.heatmap(raw, m), want)
    flat = np.zeros((52, 52), dtype=np.float32)
    assert np.array_equal(cam_ops.heatmap(flat, same), np.zeros_like(flat))
    raw = rng.random((52, 52), dtype=np.float32) + 1.0  # all positive: ReLU changes nothing
    kept = raw.copy()
    cam_ops.heatmap(raw, same)
    assert np.array_equal(raw, kept)  # the caller's CAM is left as it was
