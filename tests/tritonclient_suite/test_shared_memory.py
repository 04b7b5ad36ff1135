"""System shared memory with the real tritonclient (gRPC and HTTP) and its shared_memory utils.

The client creates POSIX shared-memory regions, registers them with our server and names them
in inference requests; the results must be the bits the plain bytes path returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
shm = pytest.importorskip("tritonclient.utils.shared_memory", reason="tritonclient shm missing")
from tritonclient.utils import InferenceServerException  # noqa: E402

INPUT_BYTES = 2 * 3 * 64 * 64 * 4
OUTPUT_BYTES = 2 * 2 * 64 * 64 * 4


def _images() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random((2, 3, 64, 64), dtype=np.float32)


@pytest.fixture(params=["grpc", "http"])
def client(request, server) -> Iterator[object]:
    if request.param == "grpc":
        c = grpcclient.InferenceServerClient(server.address)
    else:
        c = httpclient.InferenceServerClient(server.http_address)
    c.module = grpcclient if request.param == "grpc" else httpclient
    try:
        yield c
    finally:
        c.unregister_system_shared_memory()
        c.close()


def _status(client) -> dict[str, int]:
    """Registered regions -> byte size, from either client's answer."""
    if client.module is grpcclient:
        regions = client.get_system_shared_memory_status(as_json=True).get("regions", {})
        return {name: int(r["byte_size"]) for name, r in regions.items()}
    return {r["name"]: int(r["byte_size"]) for r in client.get_system_shared_memory_status()}


@pytest.fixture()
def regions() -> Iterator[dict[str, object]]:
    """An input and an output region, each its own shm object; destroyed after the test."""
    tag = uuid.uuid4().hex[:8]
    made = {
        "in": shm.create_shared_memory_region(f"in-{tag}", f"/vision-test-in-{tag}", INPUT_BYTES),
        "out": shm.create_shared_memory_region(
            f"out-{tag}", f"/vision-test-out-{tag}", OUTPUT_BYTES
        ),
        "tag": tag,
    }
    yield made
    shm.destroy_shared_memory_region(made["in"])
    shm.destroy_shared_memory_region(made["out"])


def _register(client, regions) -> tuple[str, str]:
    tag = regions["tag"]
    names = f"in-{tag}", f"out-{tag}"
    client.register_system_shared_memory(names[0], f"/vision-test-in-{tag}", INPUT_BYTES)
    client.register_system_shared_memory(names[1], f"/vision-test-out-{tag}", OUTPUT_BYTES)
    return names


def _bytes_path(images: np.ndarray, address: str) -> np.ndarray:
    with grpcclient.InferenceServerClient(address) as plain:
        tensor = grpcclient.InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        outputs = [grpcclient.InferRequestedOutput("logits")]
        return plain.infer("bright", [tensor], outputs=outputs).as_numpy("logits")


def test_shared_memory_round_trip_equals_the_bytes_path(client, regions, server):
    images = _images()
    in_name, out_name = _register(client, regions)
    shm.set_shared_memory_region(regions["in"], [images])
    tensor = client.module.InferInput("images", list(images.shape), "FP32")
    tensor.set_shared_memory(in_name, INPUT_BYTES)
    output = client.module.InferRequestedOutput("logits")
    output.set_shared_memory(out_name, OUTPUT_BYTES)
    result = client.infer("bright", [tensor], outputs=[output])

    meta = result.get_output("logits")
    if client.module is grpcclient:
        meta = {"datatype": meta.datatype, "shape": list(meta.shape)}
    assert meta["datatype"] == "FP32" and [int(d) for d in meta["shape"]] == [2, 2, 64, 64]
    got = shm.get_contents_as_numpy(regions["out"], np.float32, [2, 2, 64, 64])
    expected = _bytes_path(images, server.address)
    np.testing.assert_array_equal(got, expected)
    assert got.argmax(axis=1).sum() > 0  # not a region left at zeros


def test_status_and_unregister(client, regions):
    in_name, out_name = _register(client, regions)
    status = _status(client)
    assert status[in_name] == INPUT_BYTES and status[out_name] == OUTPUT_BYTES
    client.unregister_system_shared_memory(in_name)
    assert in_name not in _status(client)
    tensor = client.module.InferInput("images", [2, 3, 64, 64], "FP32")
    tensor.set_shared_memory(in_name, INPUT_BYTES)
    with pytest.raises(InferenceServerException) as info:
        client.infer("bright", [tensor])
    assert _invalid(client, info.value)
    assert "unknown shared-memory region" in str(info.value)


@pytest.mark.parametrize(
    ("offset", "byte_size", "message"),
    [(INPUT_BYTES, 16, "past its end"), (0, INPUT_BYTES - 4, "bytes given")],
)
def test_bad_references_are_invalid_argument(client, regions, offset, byte_size, message):
    in_name, _ = _register(client, regions)
    tensor = client.module.InferInput("images", [2, 3, 64, 64], "FP32")
    tensor.set_shared_memory(in_name, byte_size, offset=offset)
    with pytest.raises(InferenceServerException) as info:
        client.infer("bright", [tensor])
    assert _invalid(client, info.value)
    assert message in str(info.value)


def test_output_region_too_small_is_invalid_argument(client, regions):
    in_name, out_name = _register(client, regions)
    shm.set_shared_memory_region(regions["in"], [_images()])
    tensor = client.module.InferInput("images", [2, 3, 64, 64], "FP32")
    tensor.set_shared_memory(in_name, INPUT_BYTES)
    output = client.module.InferRequestedOutput("logits")
    output.set_shared_memory(out_name, OUTPUT_BYTES // 2)
    with pytest.raises(InferenceServerException) as info:
        client.infer("bright", [tensor], outputs=[output])
    assert _invalid(client, info.value)
    assert "smaller" in str(info.value)


def _invalid(client, error: InferenceServerException) -> bool:
    """INVALID_ARGUMENT over gRPC, 400 over HTTP."""
    expected = "StatusCode.INVALID_ARGUMENT" if client.module is grpcclient else "400"
    return expected in str(error.status())
