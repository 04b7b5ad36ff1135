"""System shared memory and the lean ModelInfer codec, over a real gRPC server on loopback.

(The same extension through the real tritonclient is in tests/tritonclient_suite.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory

import grpc
import numpy as np
import pytest

from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc as pb_grpc
from serving.rpc.kserve_wire import InferReply, serialize_reply, split_request
from serving.shared_memory import SharedMemoryRegistry, TensorRef
from tests.serving.conftest import start_server
from vision.errors import InvalidInputError

IMAGES_BYTES = 2 * 3 * 64 * 64 * 4
LOGITS_BYTES = 2 * 2 * 64 * 64 * 4


@pytest.fixture()
def segment() -> Iterator[shared_memory.SharedMemory]:
    """A POSIX shared-memory object big enough for images then logits; unlinked after."""
    block = shared_memory.SharedMemory(
        name=f"vision-test-{uuid.uuid4().hex[:10]}", create=True, size=8192 + IMAGES_BYTES * 2
    )
    yield block
    block.close()
    block.unlink()


@pytest.fixture()
def stub(channel: grpc.Channel) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    kserve = pb_grpc.GRPCInferenceServiceStub(channel)
    yield kserve
    kserve.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest())


def _images() -> np.ndarray:
    return np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)


def _shm_params(region: str, byte_size: int, offset: int = 0) -> dict[str, pb.InferParameter]:
    return {
        "shared_memory_region": pb.InferParameter(string_param=region),
        "shared_memory_byte_size": pb.InferParameter(int64_param=byte_size),
        "shared_memory_offset": pb.InferParameter(int64_param=offset),
    }


def _bytes_request(model: str, images: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version="1", id="raw")
    request.inputs.add(name="images", datatype="FP32", shape=list(images.shape))
    request.raw_input_contents.append(images.tobytes())
    return request


def _register(stub, name: str, key: str, offset: int, byte_size: int) -> None:
    stub.SystemSharedMemoryRegister(
        pb.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=offset, byte_size=byte_size)
    )


def test_lean_codec_reads_raw_inputs_in_place():
    request = _bytes_request("bright", _images())
    request.inputs.add(name="second", datatype="UINT8", shape=[3])
    request.raw_input_contents.append(b"\x01\x02\x03")
    request.outputs.add(name="logits")
    data = request.SerializeToString()
    call = split_request(data)
    assert [bytes(v) for v in call.raw] == list(request.raw_input_contents)
    assert all(v.obj is data for v in call.raw)  # views into the received bytes, not copies
    del request.raw_input_contents[:]
    assert call.request == request


def test_lean_reply_parses_as_the_protobuf_reply():
    logits = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    reply = InferReply(pb.ModelInferResponse(model_name="m", model_version="1", id="x"))
    reply.response.outputs.add(name="logits", datatype="FP32", shape=[2, 3, 4])
    reply.response.outputs.add(name="empty", datatype="FP32", shape=[0])
    reply.raw += [logits, b""]
    parsed = pb.ModelInferResponse.FromString(serialize_reply(reply))
    expected = pb.ModelInferResponse()
    expected.CopyFrom(reply.response)
    expected.raw_output_contents.extend([logits.tobytes(), b""])
    assert parsed == expected


def test_registry_refuses_unsafe_keys_and_regions_past_the_end(segment):
    registry = SharedMemoryRegistry()
    for key in ("../etc/passwd", "/a/b", "", "/.."):
        with pytest.raises(InvalidInputError, match="POSIX shm name"):
            registry.register("r", key, 0, 16)
    with pytest.raises(InvalidInputError, match="past its end"):
        registry.register("r", f"/{segment.name}", segment.size - 8, 16)
    with pytest.raises(InvalidInputError, match="unable to open"):
        registry.register("r", "/vision-test-never-created", 0, 16)
    assert registry.status() == []


def test_unregister_during_a_request_keeps_its_view_until_it_ends(segment):
    registry = SharedMemoryRegistry()
    registry.register("r", f"/{segment.name}", 4096, 64)
    segment.buf[4096 + 8 : 4096 + 12] = b"abcd"
    with registry.lease(TensorRef("r", 8, 4)) as view:
        registry.unregister("r")
        assert bytes(view) == b"abcd"  # still mapped while leased
        with pytest.raises(InvalidInputError, match="unknown shared-memory region"):
            registry.status("r")
    assert registry.status() == []


def test_shared_memory_round_trip_equals_the_bytes_path(stub, segment):
    images = _images()
    key = f"/{segment.name}"
    # The input at a non-page-aligned offset of the object, the logits in a region of their own.
    _register(stub, "in", key, 100, IMAGES_BYTES)
    _register(stub, "out", key, 100 + IMAGES_BYTES, LOGITS_BYTES)
    segment.buf[100 : 100 + IMAGES_BYTES] = images.tobytes()

    request = pb.ModelInferRequest(model_name="bright-scored", model_version="1", id="shm")
    request.inputs.add(
        name="images",
        datatype="FP32",
        shape=[2, 3, 64, 64],
        parameters=_shm_params("in", IMAGES_BYTES),
    )
    request.outputs.add(name="logits", parameters=_shm_params("out", LOGITS_BYTES))
    request.outputs.add(name="brightness")
    response = stub.ModelInfer(request)

    plain = stub.ModelInfer(_bytes_request("bright-scored", images))
    by_name = {o.name: i for i, o in enumerate(plain.outputs)}
    expected_logits = plain.raw_output_contents[by_name["logits"]]
    start = 100 + IMAGES_BYTES
    assert bytes(segment.buf[start : start + LOGITS_BYTES]) == expected_logits
    assert [o.name for o in response.outputs] == ["logits", "brightness"]
    assert list(response.outputs[0].shape) == [2, 2, 64, 64]
    assert response.raw_output_contents[0] == b""  # in shared memory, as Triton answers
    assert response.raw_output_contents[1] == plain.raw_output_contents[by_name["brightness"]]
    assert response.id == "shm"


def test_bad_references_are_invalid_argument(stub, segment):
    _register(stub, "in", f"/{segment.name}", 0, IMAGES_BYTES)
    cases = [
        (_shm_params("nope", IMAGES_BYTES), "unknown shared-memory region"),
        (_shm_params("in", 16, offset=IMAGES_BYTES), "past its end"),
        (_shm_params("in", IMAGES_BYTES, offset=8), "past its end"),
        (_shm_params("in", IMAGES_BYTES - 4), "bytes given"),
    ]
    for params, message in cases:
        request = pb.ModelInferRequest(model_name="bright")
        request.inputs.add(name="images", datatype="FP32", shape=[2, 3, 64, 64], parameters=params)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, params
        assert message in info.value.details()


def test_status_lists_regions_and_shutdown_unmaps_them(repository, segment):
    running = start_server(repository)
    try:
        with grpc.insecure_channel(running.address) as channel:
            kserve = pb_grpc.GRPCInferenceServiceStub(channel)
            _register(kserve, "a", f"/{segment.name}", 0, 1024)
            _register(kserve, "b", f"/{segment.name}", 1024, 2048)
            status = kserve.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
            assert {n: r.byte_size for n, r in status.regions.items()} == {"a": 1024, "b": 2048}
            one = kserve.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name="b"))
            assert one.regions["b"].offset == 1024 and one.regions["b"].key == f"/{segment.name}"
            with pytest.raises(grpc.RpcError) as info:
                _register(kserve, "a", f"/{segment.name}", 0, 16)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        regions = dict(running.server.shared_memory._regions)
    finally:
        running.stop()
    assert running.server.shared_memory.status() == []
    assert all(r.mapping.closed for r in regions.values())
