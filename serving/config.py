"""Server settings (ports, limits, threads), from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vision.paths import default_repository

# A 2048x2048 16-bit DICOM is 8 MiB of pixels; leave room for headers and raw float32 input.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


@dataclass(frozen=True)
class ServerConfig:
    """Everything `vision serve` can be told."""

    models: Path = default_repository()
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    http_port: int = 8000
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    worker_threads: int = max(2, os.cpu_count() or 2)
    drain_timeout_s: float = 30.0
    api_key: str = ""  # when set, every RPC needs metadata "authorization: Bearer <key>"
