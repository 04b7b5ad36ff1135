"""A real server on loopback (gRPC + HTTP via uvicorn) with the review tool, and httpx clients.

Users: `rev1` and `rev2` (reviewers), `sup` (supervisor), `boss` (admin); password PASSWORD.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from review.settings import CapturePolicy, ReviewSettings
from serving.config import ServerConfig
from tests.serving.conftest import ServerThread
from tests.serving.tiny_models import build_explainable_repository, build_repository

PASSWORD = "correct horse battery"
USERS = {"rev1": "reviewer", "rev2": "reviewer", "sup": "supervisor", "boss": "admin"}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class ReviewServer(ServerThread):
    """VisionServer with the review tool, in a thread with its own event loop."""

    def __init__(self, config: ServerConfig, review: ReviewSettings) -> None:
        super().__init__(
            config, start_timeout_s=180, review=review
        )  # heat maps need explain graphs
        self.review_settings = review

    @property
    def dicom(self):
        """NodeSettings, to run the DICOM node too (set before `start`)."""
        return self.parts.get("dicom")

    @dicom.setter
    def dicom(self, settings) -> None:
        self.parts["dicom"] = settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_address(self) -> str:
        return self.address

    @property
    def tool(self):
        return self.server.review


@pytest.fixture(scope="package")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review-models")
    build_repository(root)
    build_explainable_repository(root)
    return root


def start_review_server(models: Path, data_dir: Path, capture: dict | None = None) -> ReviewServer:
    config = replace(
        ServerConfig(),
        models=models,
        host="127.0.0.1",
        grpc_port=0,
        http_port=0,
        max_image_pixels=20_000_000,
        drain_timeout_s=5.0,
    )
    settings = ReviewSettings(data_dir=data_dir, capture=CapturePolicy.parse(capture))
    running = ReviewServer(config, settings).start()
    for name, role in USERS.items():
        running.tool.accounts.add_user(name, role, PASSWORD)
    return running


@pytest.fixture(scope="package")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewServer]:
    running = start_review_server(
        models, tmp_path_factory.mktemp("review-data"), {"default": "all"}
    )
    yield running
    running.stop()


def sign_in(server: ReviewServer, user: str) -> httpx.Client:
    """A client with a live session; its CSRF token is in the default headers. Close it (or
    `with contextlib.closing(sign_in(...))`)."""
    client = httpx.Client(base_url=server.url, timeout=60.0)
    answer = client.post("/review/api/login", json={"username": user, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client


@pytest.fixture()
def clients(server: ReviewServer) -> Iterator[dict[str, httpx.Client]]:
    made = {name: sign_in(server, name) for name in USERS}
    yield made
    for client in made.values():
        client.close()


def upload(client: httpx.Client, model: str, data: bytes, name: str = "image.png") -> dict:
    answer = client.post("/review/api/cases", files={"image": (name, data)}, data={"model": model})
    assert answer.status_code == 201, answer.text
    return answer.json()


def act(client: httpx.Client, case_id: int, **body) -> httpx.Response:
    return client.post(f"/review/api/cases/{case_id}/actions", json=body)
