"""System shared memory with the real tritonclient.grpc and tritonclient.utils.shared_memory.

The client creates POSIX shared-memory regions, registers them with our server and names them
in ModelInfer; the results must be the bits the plain bytes path returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
shm = pytest.importorskip("tritonclient.utils.shared_memory", reason="tritonclient shm missing")
from tritonclient.utils import InferenceServerException  # noqa: E402

INPUT_BYTES = 2 * 3 * 64 * 64 * 4
OUTPUT_BYTES = 2 * 2 * 64 * 64 * 4


def _images() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random((2, 3, 64, 64), dtype=np.float32)


@pytest.fixture()
def client(server) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.address) as c:
        yield c
        c.unregister_system_shared_memory()


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


def _bytes_path(client, images: np.ndarray) -> np.ndarray:
    tensor = grpcclient.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = client.infer("bright", [tensor], outputs=[grpcclient.InferRequestedOutput("logits")])
    return result.as_numpy("logits")


def test_shared_memory_round_trip_equals_the_bytes_path(client, regions):
    images = _images()
    in_name, out_name = _register(client, regions)
    shm.set_shared_memory_region(regions["in"], [images])
    tensor = grpcclient.InferInput("images", list(images.shape), "FP32")
    tensor.set_shared_memory(in_name, INPUT_BYTES)
    output = grpcclient.InferRequestedOutput("logits")
    output.set_shared_memory(out_name, OUTPUT_BYTES)
    result = client.infer("bright", [tensor], outputs=[output])

    meta = result.get_output("logits")
    assert meta.datatype == "FP32" and list(meta.shape) == [2, 2, 64, 64]
    got = shm.get_contents_as_numpy(regions["out"], np.float32, [2, 2, 64, 64])
    expected = _bytes_path(client, images)
    np.testing.assert_array_equal(got, expected)
    assert got.argmax(axis=1).sum() > 0  # not a region left at zeros


def test_status_and_unregister(client, regions):
    in_name, out_name = _register(client, regions)
    status = client.get_system_shared_memory_status(as_json=True)
    assert set(status["regions"]) >= {in_name, out_name}
    assert int(status["regions"][in_name]["byte_size"]) == INPUT_BYTES
    client.unregister_system_shared_memory(in_name)
    status = client.get_system_shared_memory_status(as_json=True)
    assert in_name not in status.get("regions", {})
    tensor = grpcclient.InferInput("images", [2, 3, 64, 64], "FP32")
    tensor.set_shared_memory(in_name, INPUT_BYTES)
    with pytest.raises(InferenceServerException) as info:
        client.infer("bright", [tensor])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert "unknown shared-memory region" in str(info.value)


@pytest.mark.parametrize(
    ("offset", "byte_size", "message"),
    [(INPUT_BYTES, 16, "past its end"), (0, INPUT_BYTES - 4, "bytes given")],
)
def test_bad_references_are_invalid_argument(client, regions, offset, byte_size, message):
    in_name, _ = _register(client, regions)
    tensor = grpcclient.InferInput("images", [2, 3, 64, 64], "FP32")
    tensor.set_shared_memory(in_name, byte_size, offset=offset)
    with pytest.raises(InferenceServerException) as info:
        client.infer("bright", [tensor])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert message in str(info.value)


def test_output_region_too_small_is_invalid_argument(client, regions):
    in_name, out_name = _register(client, regions)
    shm.set_shared_memory_region(regions["in"], [_images()])
    tensor = grpcclient.InferInput("images", [2, 3, 64, 64], "FP32")
    tensor.set_shared_memory(in_name, INPUT_BYTES)
    output = grpcclient.InferRequestedOutput("logits")
    output.set_shared_memory(out_name, OUTPUT_BYTES // 2)
    with pytest.raises(InferenceServerException) as info:
        client.infer("bright", [tensor], outputs=[output])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert "smaller" in str(info.value)
