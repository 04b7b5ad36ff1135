"""Third-party exports served from a config file only: shared helpers and fixtures.

Ultralytics (AGPL-3.0) is imported only by these tests, never by `vision/` or `serving/`; its
offline switches are set before it is imported, so nothing is fetched from the network.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
import yaml

from protos.vision.v1 import vision_pb2_grpc
from tests.serving.conftest import ServerThread, start_server


def write_repository(root: Path, onnx_path: Path, config: dict[str, Any]) -> Path:
    """A model repository `root/<name>/{config.yaml,1/model.onnx}` holding one model."""
    model_dir = root / config["name"]
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.onnx").write_bytes(onnx_path.read_bytes())
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def png_bytes(rgb: np.ndarray) -> bytes:
    """Lossless PNG of an RGB (or grey) uint8 image."""
    pixels = rgb[:, :, ::-1] if rgb.ndim == 3 else rgb
    ok, data = cv2.imencode(".png", pixels)
    assert ok, "PNG encoding failed"
    return data.tobytes()


@pytest.fixture(scope="module")
def serve() -> Iterator[Any]:
    """`serve(repository)` starts a server over it (stopped after the module) and returns a stub."""
    running: list[tuple[ServerThread, grpc.Channel]] = []

    def _serve(repository: Path) -> vision_pb2_grpc.VisionServiceStub:
        server = start_server(repository)
        channel = grpc.insecure_channel(server.address)
        running.append((server, channel))
        return vision_pb2_grpc.VisionServiceStub(channel)

    yield _serve
    for server, channel in running:
        channel.close()
        server.stop()


@pytest.fixture(scope="session")
def ultralytics(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The `ultralytics` package, imported offline with its settings in a temporary folder."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no online checks, downloads or analytics
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")  # never pip-install a missing requirement
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-settings")))
    try:
        return importlib.import_module("ultralytics")
    except ImportError as exc:
        pytest.skip(
            f"ultralytics is not installed ({exc}); pip install ultralytics-opencv-headless "
            "(AGPL-3.0, tests only)"
        )
