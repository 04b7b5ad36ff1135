"""Fast, seeded, structure-aware mutation of fuzz cases (the volume behind the hypothesis pool).

Hypothesis builds structured cases at some milliseconds each; a run of 10^5 inputs mutates a
pool of them with numpy's generator instead, at the layer that reaches the code under test:
the image bytes inside a vision.v1 request (re-serialised, so the decoder sees them), the
shapes, datatypes and byte counts of a KServe tensor, the text of a REST body. One `Mutator`
with one seed always yields the same inputs.
"""

from __future__ import annotations

import struct

import numpy as np
from google.protobuf.message import DecodeError

from protos.inference import grpc_service_pb2 as kpb
from protos.vision.v1 import vision_pb2 as pb
from tests.fuzz.strategies import DATATYPES, DIMS, MODELS, SIZES, Case

_REQUESTS = {"detect": pb.DetectRequest, "segment": pb.SegmentRequest, "explain": pb.ExplainRequest}
_FLOATS = (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 0.5, 1.0, 2.0, 1e30)
_TOKENS = (b"9" * 400, b"-1", b"null", b"[]", b"{}", b'"x"', b"1e999", b"true", b"[[[[", b"0")


class Mutator:
    """Seeded mutations of bytes and of cases."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def _pick(self, options: tuple | list):
        return options[int(self.rng.integers(len(options)))]

    def data(self, data: bytes) -> bytes:
        """Truncated, bit-flipped, spliced, a header field overwritten, or extended."""
        if not data:
            return bytes(self.rng.integers(0, 256, int(self.rng.integers(1, 64)), dtype=np.uint8))
        at = int(self.rng.integers(len(data)))
        kind = int(self.rng.integers(5))
        if kind == 0:
            return data[:at]
        if kind == 1:
            out = np.frombuffer(data, np.uint8).copy()
            where = self.rng.integers(0, len(data), int(self.rng.integers(1, 9)))
            out[where] ^= (1 << self.rng.integers(0, 8, len(where))).astype(np.uint8)
            return out.tobytes()
        if kind == 2:
            junk = self.rng.integers(0, 256, int(self.rng.integers(1, 64)), dtype=np.uint8)
            return data[:at] + junk.tobytes() + data[at:]
        if kind == 3:
            at = int(self.rng.integers(min(len(data), 400)))
            field = struct.pack(self._pick(("<I", ">I")), self._pick(SIZES))
            return data[:at] + field + data[at + 4 :]
        return data + data[: int(self.rng.integers(1, 256))]

    def case(self, case: Case) -> Case:
        """A mutant of `case` at the layer its API parses."""
        api, payload, model, headers = case
        try:
            if api in _REQUESTS:
                return api, self._vision(_REQUESTS[api].FromString(payload)), model, headers
            if api == "infer":
                return api, self._infer(kpb.ModelInferRequest.FromString(payload)), model, headers
        except DecodeError:  # the pool case was itself broken at the byte level
            return api, self.data(payload), model, headers
        if api == "rest":
            return api, self._rest(payload), model, self._headers(headers, payload)
        return api, self.data(payload), model, headers

    def _vision(self, request) -> bytes:
        kind = int(self.rng.integers(6))
        image = request.image
        if kind <= 2 and image.WhichOneof("source") == "encoded":
            image.encoded = self.data(image.encoded)
        elif kind <= 2 and image.WhichOneof("source") == "raw":
            shape = list(image.raw.shape) or [1]
            shape[int(self.rng.integers(len(shape)))] = self._pick(DIMS[:-2])
            image.raw.shape[:] = shape
        elif kind == 3:
            request.model.name = self._pick(MODELS)
        elif kind == 4 and isinstance(request, pb.DetectRequest):
            setattr(request, self._pick(("score_threshold", "iou_threshold")), self._pick(_FLOATS))
        else:
            return self.data(request.SerializeToString())
        return request.SerializeToString()

    def _infer(self, request: kpb.ModelInferRequest) -> bytes:
        kind = int(self.rng.integers(5))
        if request.inputs and kind <= 1:
            tensor = request.inputs[int(self.rng.integers(len(request.inputs)))]
            shape = list(tensor.shape) or [1]
            shape[int(self.rng.integers(len(shape)))] = self._pick(DIMS)
            tensor.shape[:] = shape
        elif request.inputs and kind == 2:
            request.inputs[0].datatype = self._pick(DATATYPES)
        elif request.raw_input_contents and kind == 3:
            request.raw_input_contents[0] = self.data(request.raw_input_contents[0])
        else:
            return self.data(request.SerializeToString())
        return request.SerializeToString()

    def _rest(self, body: bytes) -> bytes:
        if self.rng.integers(2):
            return self.data(body)
        digits = [i for i in range(len(body)) if 48 <= body[i] <= 57]
        if not digits:
            return self.data(body)
        at = self._pick(digits)
        return body[:at] + self._pick(_TOKENS) + body[at + 1 :]

    def _headers(self, headers: dict, payload: bytes) -> dict:
        if not self.rng.integers(4):
            value = self._pick(("0", "1", str(len(payload)), str(len(payload) + 1), "x", "-5"))
            return {**headers, "Inference-Header-Content-Length": value}
        return headers
