"""KServe v2 on the wire with the real tritonclient, unmodified: the same suite over gRPC and HTTP.

The two clients answer in different shapes (protobuf or JSON-as-dict, int64 as strings over
gRPC's JSON); `Protocol` reads both the same way, so every test runs once per protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

# What each protocol's InferenceServerException.status() says for a domain error.
STATUS = {
    "grpc": {
        "INVALID_ARGUMENT": "StatusCode.INVALID_ARGUMENT",
        "NOT_FOUND": "StatusCode.NOT_FOUND",
    },
    "http": {"INVALID_ARGUMENT": "400", "NOT_FOUND": "404"},
}


@dataclass
class Protocol:
    """One tritonclient flavour connected to the server."""

    name: str
    module: ModuleType
    client: object

    def json(self, method: str, *args: object) -> object:
        """A metadata/index/statistics call's answer as plain JSON (dicts and lists)."""
        call = getattr(self.client, method)
        return call(*args, as_json=True) if self.name == "grpc" else call(*args)

    def index(self) -> list[dict]:
        answer = self.json("get_model_repository_index")
        return answer.get("models", []) if self.name == "grpc" else answer

    def status(self, code: str) -> str:
        return STATUS[self.name][code]

    def input(self, array: np.ndarray, name: str = "images", binary: bool = True):
        tensor = self.module.InferInput(name, list(array.shape), "FP32")
        if self.name == "http":
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        return tensor

    def output(self, name: str, binary: bool = True):
        if self.name == "http":
            return self.module.InferRequestedOutput(name, binary_data=binary)
        return self.module.InferRequestedOutput(name)

    def version_of(self, result) -> str:
        response = (
            result.get_response(as_json=True) if self.name == "grpc" else result.get_response()
        )
        return response["model_version"]


@pytest.fixture(params=["grpc", "http"])
def triton(request, server):
    if request.param == "grpc":
        protocol = Protocol("grpc", grpcclient, grpcclient.InferenceServerClient(server.address))
    else:
        client = httpclient.InferenceServerClient(server.http_address)
        protocol = Protocol("http", httpclient, client)
    yield protocol
    protocol.client.close()


def _images() -> np.ndarray:
    images = np.zeros((2, 3, 64, 64), dtype=np.float32)
    images[1, :, 10:20, 10:20] = 1.0
    return images


def test_health_and_server_metadata(triton):
    client = triton.client
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("bright")
    assert client.is_model_ready("bright", "1")
    assert not client.is_model_ready("nope")
    meta = triton.json("get_server_metadata")
    assert meta["name"] == "vision-serving" and "model_repository" in meta["extensions"]
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata(triton):
    meta = triton.json("get_model_metadata", "boxes")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"][0]["name"] == "images" and meta["inputs"][0]["datatype"] == "FP32"
    assert [int(d) for d in meta["inputs"][0]["shape"]] == [-1, 3, 128, 128]
    assert meta["outputs"][0]["name"] == "output0"


def test_infer_raw_tensors_batch_of_two(triton):
    result = triton.client.infer(
        "bright", [triton.input(_images())], outputs=[triton.output("logits")]
    )
    logits = result.as_numpy("logits")
    assert logits.shape == (2, 2, 64, 64)
    labels = logits.argmax(axis=1)
    assert labels[0].sum() == 0 and labels[1].sum() == 100
    assert triton.version_of(result) == "2"


def test_grpc_and_http_outputs_are_identical(server):
    """The same request over gRPC, HTTP binary and HTTP JSON gives the same bits."""
    images = _images()
    with grpcclient.InferenceServerClient(server.address) as g:
        g_input = grpcclient.InferInput("images", list(images.shape), "FP32")
        g_input.set_data_from_numpy(images)
        expected = g.infer("bright-scored", [g_input], model_version="1")
    http = httpclient.InferenceServerClient(server.http_address)
    try:
        for binary in (True, False):
            h_input = httpclient.InferInput("images", list(images.shape), "FP32")
            h_input.set_data_from_numpy(images, binary_data=binary)
            outputs = [
                httpclient.InferRequestedOutput(name, binary_data=binary)
                for name in ("logits", "brightness")
            ]
            got = http.infer("bright-scored", [h_input], model_version="1", outputs=outputs)
            for name in ("logits", "brightness"):
                np.testing.assert_array_equal(got.as_numpy(name), expected.as_numpy(name))
        # No outputs named: tritonclient.http asks for all of them, binary; body gzip-compressed.
        every = http.infer(
            "bright-scored", [h_input], model_version="1", request_compression_algorithm="gzip"
        )
        np.testing.assert_array_equal(every.as_numpy("logits"), expected.as_numpy("logits"))
        np.testing.assert_array_equal(every.as_numpy("brightness"), expected.as_numpy("brightness"))
    finally:
        http.close()


def test_infer_errors_are_clear(triton):
    zeros = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(InferenceServerException) as info:
        triton.client.infer("bright", [triton.input(zeros, name="wrong")])
    assert triton.status("INVALID_ARGUMENT") in str(info.value.status())
    assert "images" in str(info.value)
    with pytest.raises(InferenceServerException) as info:
        triton.client.infer("missing", [triton.input(zeros)])
    assert triton.status("NOT_FOUND") in str(info.value.status())
    with pytest.raises(InferenceServerException) as info:
        triton.client.infer("boxes", [triton.input(zeros)])
    assert triton.status("INVALID_ARGUMENT") in str(info.value.status())
    assert "128" in str(info.value)


def test_repository_index_unload_load(triton):
    index = {(m["name"], m.get("version", "")): m["state"] for m in triton.index()}
    assert index[("bright", "2")] == "READY" and index[("boxes", "1")] == "READY"
    triton.client.unload_model("boxes")
    assert not triton.client.is_model_ready("boxes")
    states = {m["name"]: m["state"] for m in triton.index()}
    assert states["boxes"] == "UNAVAILABLE"
    triton.client.load_model("boxes")
    assert triton.client.is_model_ready("boxes")
    with pytest.raises(InferenceServerException) as info:
        triton.client.load_model("not-there")
    assert triton.status("NOT_FOUND") in str(info.value.status())


def test_statistics_count_inferences(triton):
    images = np.zeros((1, 3, 64, 64), dtype=np.float32)
    before = triton.json("get_inference_statistics", "bright", "2")["model_stats"]
    for _ in range(3):
        triton.client.infer("bright", [triton.input(images)])
    stats = triton.json("get_inference_statistics", "bright", "2")["model_stats"]
    assert stats[0]["name"] == "bright" and stats[0]["version"] == "2"
    already = int(before[0].get("inference_count", 0)) if before else 0
    gained = int(stats[0]["inference_count"]) - already
    assert gained == 3
    assert int(stats[0]["inference_stats"]["success"]["count"]) >= 3
    assert int(stats[0]["inference_stats"]["compute_infer"]["ns"]) > 0
