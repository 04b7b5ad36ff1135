"""The lean codec of `ModelInfer`: tensor bytes are never copied between the wire and numpy.

Protobuf's own parser copies every `raw_input_contents` entry into its arena, and reading the
field copies it again into a new `bytes`; building a response copies each output into a `bytes`
(`tobytes`), then into the message, then into the serialized string. Here the request's top
level is scanned once: `raw_input_contents` (field 7) become memoryviews into the received
bytes (so `np.frombuffer` reads the wire buffer itself) and only the small rest is parsed by
protobuf. The response is serialized without its tensors, and each output array's buffer is
appended as field 6 in the single join that makes the bytes gRPC sends: outputs are written
once. The wire format is protobuf's own: repeated fields may come in any position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc as pb_grpc

RAW_INPUT_FIELD = 7
_RAW_OUTPUT_TAG = bytes([(6 << 3) | 2])  # ModelInferResponse.raw_output_contents, length-delimited
_SERVICE = "inference.GRPCInferenceService"


@dataclass
class InferCall:
    """A parsed ModelInferRequest whose raw_input_contents are views into the received bytes."""

    request: pb.ModelInferRequest
    raw: list[memoryview] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        """The request's model (what interceptors read from a ModelInferRequest)."""
        return self.request.model_name


@dataclass
class InferReply:
    """A response without tensors, plus the buffers of its raw_output_contents, in order."""

    response: pb.ModelInferResponse
    raw: list = field(default_factory=list)  # C-contiguous buffers (numpy arrays, bytes)


class _MalformedError(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _MalformedError
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _skip(data: bytes, pos: int, wire_type: int) -> tuple[int, int | None]:
    """End of the field value at `pos`, and where its payload starts if length-delimited."""
    if wire_type == 0:
        return _varint(data, pos)[1], None
    if wire_type == 1:
        return pos + 8, None
    if wire_type == 5:
        return pos + 4, None
    if wire_type == 2:
        length, start = _varint(data, pos)
        return start + length, start
    raise _MalformedError


def split_request(data: bytes) -> InferCall:
    """Parse a serialized ModelInferRequest, its raw tensors as zero-copy views."""
    view, chunks, raw = memoryview(data), [], []
    pos = chunk_start = 0
    try:
        while pos < len(data):
            field_start = pos
            tag, pos = _varint(data, pos)
            pos, payload = _skip(data, pos, tag & 7)
            if pos > len(data):
                raise _MalformedError
            if tag >> 3 == RAW_INPUT_FIELD and payload is not None:
                chunks.append(view[chunk_start:field_start])
                raw.append(view[payload:pos])
                chunk_start = pos
    except _MalformedError:  # let protobuf say what is wrong (DecodeError, as without this codec)
        return InferCall(pb.ModelInferRequest.FromString(data))
    if not raw:
        return InferCall(pb.ModelInferRequest.FromString(data))
    chunks.append(view[chunk_start:])
    return InferCall(pb.ModelInferRequest.FromString(b"".join(chunks)), raw)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def serialize_reply(reply: InferReply | pb.ModelInferResponse) -> bytes:
    """The response's bytes: its fields, then each raw output appended once."""
    if isinstance(reply, pb.ModelInferResponse):
        return reply.SerializeToString()
    parts: list = [reply.response.SerializeToString()]
    for buffer in reply.raw:
        size = memoryview(buffer).nbytes
        parts += [_RAW_OUTPUT_TAG, _encode_varint(size), buffer]
    return b"".join(parts)


class _Recorder:
    """Collects the handlers the generated `add_..._to_server` would register."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers come again, by name, below

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.handlers = dict(handlers)


def add_kserve_servicer(servicer: pb_grpc.GRPCInferenceServiceServicer, server) -> None:
    """Register the KServe servicer with the lean ModelInfer codec (the rest as generated).

    ModelInfer is registered stream-unary (`servicer.ModelInferUnread`): a unary client's call
    is the same on the wire (HTTP/2 headers, one length-prefixed message, end of stream), but
    gRPC hands the handler a request iterator as soon as the headers are in, so the call can be
    refused before its message is received and parsed (`serving.admission.Intake`)."""
    recorder = _Recorder()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, recorder)
    handlers = recorder.handlers
    handlers["ModelInfer"] = grpc.stream_unary_rpc_method_handler(
        servicer.ModelInferUnread,
        request_deserializer=split_request,
        response_serializer=serialize_reply,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    server.add_registered_method_handlers(_SERVICE, handlers)
