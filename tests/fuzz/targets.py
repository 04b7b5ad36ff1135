"""Send one fuzz input to a running server and name the status it got.

Requests go as raw bytes (`grpc` with no serialiser, so even a malformed protobuf reaches the
server) to `vision.v1` Detect / Segment / Explain and KServe ModelInfer, and as a body to the
v2 REST infer route. Every outcome is a gRPC status name; REST statuses are mapped to the name
of the gRPC code the README pairs them with, `HTTP_<n>` for the HTTP-only ones. `HANG` is a
call that outlived the client's deadline, `CONNECTION` one that found no server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import grpc
import httpx
import numpy as np

from protos.vision.v1 import vision_pb2 as pb

VISION = "/vision.v1.VisionService/"
KSERVE = "/inference.GRPCInferenceService/"
METHODS = {
    "detect": VISION + "Detect",
    "segment": VISION + "Segment",
    "explain": VISION + "Explain",
    "infer": KSERVE + "ModelInfer",
}
HTTP_TO_GRPC = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# What a server must never answer to a client's input (UNIMPLEMENTED: these methods exist, so
# only an input that raised NotImplementedError gets it).
FAILURES = ("INTERNAL", "UNKNOWN", "UNIMPLEMENTED", "HANG", "CONNECTION", "HTTP_502")
MESSAGE_BYTES = 80 * 1024 * 1024  # above the server's limit: its own check answers


@dataclass(frozen=True)
class Outcome:
    """The status a request got, the error message (empty on OK), and how long it took."""

    status: str
    message: str
    seconds: float


def image_request(api: str, model: str, encoded: bytes) -> bytes:
    """A serialised vision.v1 request of `api` carrying `encoded` as its image."""
    image = pb.ImageInput(encoded=encoded)
    ref = pb.ModelRef(name=model)
    if api == "detect":
        return pb.DetectRequest(model=ref, image=image).SerializeToString()
    if api == "explain":
        return pb.ExplainRequest(model=ref, image=image).SerializeToString()
    return pb.SegmentRequest(model=ref, image=image).SerializeToString()


def small_png(seed: int = 0) -> bytes:
    """A valid 24x32 grey PNG (for warm-up and for requests that must succeed)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32), dtype=np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


class Clients:
    """gRPC and HTTP clients of one server, with a per-call deadline (a hang is past it)."""

    def __init__(self, grpc_address: str, http_base: str | None, deadline_s: float = 30.0):
        options = [
            ("grpc.max_send_message_length", MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MESSAGE_BYTES),
        ]
        self.deadline_s = deadline_s
        self._channel = grpc.insecure_channel(grpc_address, options=options)
        self._calls = {api: self._channel.unary_unary(path) for api, path in METHODS.items()}
        self._http = httpx.Client(base_url=http_base, timeout=deadline_s) if http_base else None

    def close(self) -> None:
        """Close both clients."""
        self._channel.close()
        if self._http is not None:
            self._http.close()

    def send(
        self, api: str, payload: bytes, model: str = "", headers: dict | None = None
    ) -> Outcome:
        """Send `payload` to `api` ("image" is Segment of encoded bytes) and name the status."""
        start = time.monotonic()
        if api == "rest":
            status, message = self._rest(payload, model, headers or {})
        else:
            if api == "image":
                api, payload = "segment", image_request("segment", model, payload)
            status, message = self._grpc(api, payload)
        return Outcome(status, message, time.monotonic() - start)

    def _grpc(self, api: str, payload: bytes) -> tuple[str, str]:
        start = time.monotonic()
        try:
            self._calls[api](payload, timeout=self.deadline_s)
        except grpc.RpcError as exc:
            code = exc.code()
            late = time.monotonic() - start >= self.deadline_s * 0.99
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and late:
                return "HANG", ""
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
                return "CONNECTION", exc.details() or ""
            return code.name, exc.details() or ""
        return "OK", ""

    def _rest(self, body: bytes, model: str, headers: dict) -> tuple[str, str]:
        if self._http is None:
            raise RuntimeError("no HTTP port: start the server with http_port=0")
        try:
            reply = self._http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        except httpx.TimeoutException:
            return "HANG", ""
        except httpx.TransportError as exc:
            return "CONNECTION", type(exc).__name__
        status = HTTP_TO_GRPC.get(reply.status_code, f"HTTP_{reply.status_code}")
        return status, "" if status == "OK" else reply.text[:2000]
