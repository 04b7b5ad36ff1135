"""Messages of the `Inspect` stream: the stream's config and one frame (encoded or raw)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from line.reader import Captured
from protos.vision.v1 import vision_pb2 as pb

POLICIES = {"latest": pb.STREAM_POLICY_LATEST, "every": pb.STREAM_POLICY_EVERY}
ENCODINGS = ("jpeg", "png", "raw")


@dataclass(frozen=True)
class StreamSettings:
    """What the client asks of the stream, and how it sends frames."""

    model: str
    camera: str
    policy: str = "latest"
    max_in_flight: int = 4
    stale_after_ms: int = 1000
    version: str = ""
    encoding: str = "jpeg"
    jpeg_quality: int = 90

    def config_request(self) -> pb.InspectRequest:
        """The stream's first message."""
        config = pb.StreamConfig(
            model=pb.ModelRef(name=self.model, version=self.version),
            camera_id=self.camera,
            policy=POLICIES[self.policy],
            max_in_flight=self.max_in_flight,
            stale_after_ms=self.stale_after_ms,
        )
        return pb.InspectRequest(config=config)

    def frame_request(self, frame: Captured) -> pb.InspectRequest:
        """One frame's message, its image encoded as configured."""
        message = pb.Frame(
            sequence=frame.sequence,
            capture_time_unix_ns=frame.capture_ns,
            image=encode_image(frame.image, self.encoding, self.jpeg_quality),
        )
        return pb.InspectRequest(frame=message)


def encode_image(image: np.ndarray, encoding: str, jpeg_quality: int = 90) -> pb.ImageInput:
    """A BGR (or grey) uint8 frame as JPEG, PNG or raw RGB pixels."""
    if encoding == "raw":
        pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        raw = pb.RawImage(
            data=np.ascontiguousarray(pixels).tobytes(),
            shape=list(pixels.shape),
            dtype=pb.PIXEL_TYPE_UINT8,
        )
        return pb.ImageInput(raw=raw)
    if encoding == "jpeg":
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"cannot encode a frame of shape {image.shape} as {encoding}")
    return pb.ImageInput(encoded=data.tobytes())
