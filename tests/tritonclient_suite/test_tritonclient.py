"""KServe v2 on the wire with the real tritonclient, unmodified."""

from __future__ import annotations

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture()
def triton(server):
    client = grpcclient.InferenceServerClient(server.address)
    yield client
    client.close()


def _input(array: np.ndarray, name: str = "images"):
    tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def test_health_and_server_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("bright")
    assert triton.is_model_ready("bright", "1")
    assert not triton.is_model_ready("nope")
    meta = triton.get_server_metadata()
    assert meta.name == "vision-serving" and "model_repository" in meta.extensions


def test_model_metadata(triton):
    meta = triton.get_model_metadata("boxes")
    assert meta.platform == "onnxruntime_onnx"
    assert meta.inputs[0].name == "images" and meta.inputs[0].datatype == "FP32"
    assert list(meta.inputs[0].shape) == [-1, 3, 128, 128]
    assert meta.outputs[0].name == "output0"


def test_infer_raw_tensors_batch_of_two(triton):
    images = np.zeros((2, 3, 64, 64), dtype=np.float32)
    images[1, :, 10:20, 10:20] = 1.0
    result = triton.infer(
        "bright", [_input(images)], outputs=[grpcclient.InferRequestedOutput("logits")]
    )
    logits = result.as_numpy("logits")
    assert logits.shape == (2, 2, 64, 64)
    labels = logits.argmax(axis=1)
    assert labels[0].sum() == 0 and labels[1].sum() == 100
    assert result.get_response().model_version == "2"


def test_infer_errors_are_clear(triton):
    with pytest.raises(InferenceServerException) as info:
        triton.infer("bright", [_input(np.zeros((1, 3, 64, 64), np.float32), name="wrong")])
    assert "StatusCode.INVALID_ARGUMENT" in str(info.value.status()) and "images" in str(info.value)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("missing", [_input(np.zeros((1, 3, 64, 64), np.float32))])
    assert "NOT_FOUND" in str(info.value.status())
    with pytest.raises(InferenceServerException) as info:
        triton.infer("boxes", [_input(np.zeros((1, 3, 64, 64), np.float32))])
    assert "INVALID_ARGUMENT" in str(info.value.status()) and "128" in str(info.value)


def test_repository_index_unload_load(triton):
    index = {(m.name, m.version): m.state for m in triton.get_model_repository_index().models}
    assert index[("bright", "2")] == "READY" and index[("boxes", "1")] == "READY"
    triton.unload_model("boxes")
    assert not triton.is_model_ready("boxes")
    states = {m.name: m.state for m in triton.get_model_repository_index().models}
    assert states["boxes"] == "UNAVAILABLE"
    triton.load_model("boxes")
    assert triton.is_model_ready("boxes")
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("not-there")
    assert "NOT_FOUND" in str(info.value.status())


def test_statistics_count_inferences(triton):
    images = np.zeros((1, 3, 64, 64), dtype=np.float32)
    for _ in range(3):
        triton.infer("bright", [_input(images)])
    stats = triton.get_inference_statistics("bright", "2").model_stats
    assert stats[0].name == "bright" and stats[0].inference_count >= 3
    assert stats[0].inference_stats.success.count >= 3
    assert stats[0].inference_stats.compute_infer.ns > 0
