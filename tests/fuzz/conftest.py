"""A real server on loopback (gRPC and HTTP) over the tiny test models, for the fuzz tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.reproducers import MAX_PIXELS
from tests.fuzz.targets import Clients
from tests.serving.conftest import ServerThread, start_server
from tests.serving.tiny_models import build_explainable_repository, build_repository


def fuzz_repository(root: Path) -> Path:
    """Segmenters (bright, bright-scored, bright-x, bright-y) and detectors (boxes, boxes-x)."""
    build_repository(root)
    return build_explainable_repository(root)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    models = fuzz_repository(tmp_path_factory.mktemp("fuzz-models"))
    running = start_server(models, http_port=0, max_image_pixels=MAX_PIXELS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def clients(fuzz_server: ServerThread) -> Iterator[Clients]:
    server = fuzz_server.server
    both = Clients(fuzz_server.address, f"http://127.0.0.1:{server.http_port}")
    yield both
    both.close()
