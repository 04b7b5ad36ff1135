"""Server settings (ports, limits, threads), from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from serving.security.settings import SecuritySettings
from vision.paths import default_repository

# A 2048x2048 16-bit DICOM is 8 MiB of pixels; leave room for headers and raw float32 input.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# A 512x512 CT of 1000 slices; as float32 about 1 GiB, the model's resampled grid as much again.
DEFAULT_MAX_VOLUME_VOXELS = 512 * 512 * 1000


@dataclass(frozen=True)
class ServerConfig:
    """Everything `vision serve` can be told."""

    models: Path = default_repository()
    host: str = "127.0.0.1"  # loopback unless told (`--host 0.0.0.0` in a container)
    grpc_port: int = 8001
    http_port: int = 8000
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS  # SegmentVolume, the DICOM node's volumes
    worker_threads: int = max(2, os.cpu_count() or 2)
    drain_timeout_s: float = 30.0
    reuse_port: bool = False  # SO_REUSEPORT on both ports (`vision serve --workers N`)
    # gRPC's own limit on calls in flight (all methods, streams and health included), refused
    # RESOURCE_EXHAUSTED before the message is read; 0: off (docs/overload-and-faults.md)
    grpc_max_concurrent_rpcs: int = 0
    # KServe ModelInfer calls held at once before their message (and so their model) is read;
    # 0: the sum of the READY models' admission places (`serving.admission.Intake`)
    kserve_intake: int = 0
    # HTTP/2 stream window held at this many bytes (BDP probing off), so a refused call's
    # client has pushed at most this much; 0: gRPC's default, which grows the window
    grpc_stream_window_bytes: int = 0
    api_key: str = ""  # VISION_API_KEY: one token with every role (tokens: security)
    security: SecuritySettings = field(default_factory=SecuritySettings)
