"""A real server on loopback, in a thread with its own event loop, over tiny test models."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from app.server import VisionServer
from protos.vision.v1 import vision_pb2_grpc
from serving.config import ServerConfig
from tests.serving.tiny_models import build_repository


class ServerThread:
    """Runs VisionServer in a background thread; `address` is host:port on loopback."""

    def __init__(
        self,
        config: ServerConfig,
        wait_explain: bool = True,
        start_timeout_s: float = 60.0,
        **parts: object,
    ) -> None:
        self.config = config
        self.wait_explain = wait_explain  # start() returns once explain graphs are in too
        self.start_timeout_s = start_timeout_s
        self.parts = dict(parts)  # VisionServer's other parts: dicom=..., review=...
        self.server: VisionServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._started.wait(self.start_timeout_s):
            raise TimeoutError(f"server did not start in {self.start_timeout_s:g} s")
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            self.server = VisionServer(self.config, **self.parts)
            self.loop = asyncio.get_running_loop()
            await self.server.start()
            if self.wait_explain:
                await self.server.repository.explain_loaded()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self.server.wait_stopped()

    def call(self, coroutine) -> object:
        """Run a coroutine on the server's loop (e.g. repository.load) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def stop(self) -> None:
        if self.server is not None and self.loop is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self._thread.join(30)


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


def start_server(models: Path, wait_explain: bool = True, **overrides) -> ServerThread:
    settings = {
        "models": models,
        "host": "127.0.0.1",
        "grpc_port": 0,
        "http_port": -1,
        "max_image_pixels": 2_000_000,
        "drain_timeout_s": 5.0,
        **overrides,
    }
    config = replace(ServerConfig(), **settings)
    return ServerThread(config, wait_explain).start()


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    running = start_server(repository)
    yield running
    running.stop()


@pytest.fixture()
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture()
def vision_stub(channel: grpc.Channel) -> vision_pb2_grpc.VisionServiceStub:
    return vision_pb2_grpc.VisionServiceStub(channel)
