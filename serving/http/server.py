"""Runs the HTTP app with uvicorn inside the already running event loop (no thread, no fork)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process owner (`vision serve`) handles them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket on host:port (0: a free port); OSError when the port is taken.

    `reuse_port`: SO_REUSEPORT, so several worker processes listen on the same port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server(
            (host, port), family=family, backlog=2048, reuse_port=reuse_port
        )
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port} for HTTP (port in use?): {exc}") from exc
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and this one's is 0:
    # without it a keep-alive response waits ~40 ms for the client's delayed ACK (Nagle).
    # Accepted connections inherit the option from the listening socket (Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class HttpServer:
    """An ASGI app served by uvicorn on one port, started and stopped from async code.

    With `ssl_context` it serves HTTPS; that context may change what it presents and checks
    while serving (`serving.security.tls.HttpTls` moves new connections to reloaded files).
    """

    def __init__(
        self,
        app: ASGIApp,
        drain_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._app = app
        self._drain_timeout_s = drain_timeout_s
        self._ssl = ssl_context
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self.port = 0

    @property
    def app(self) -> ASGIApp:
        """The application served (its routes are what the access rules must cover)."""
        return self._app

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listen on host:port (0 picks a free port) and serve; returns the bound port."""
        if self._task is not None:
            raise RuntimeError("the HTTP server is already started")
        sock = _listen(host, port, reuse_port)
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=self._drain_timeout_s,
        )
        config.load()
        config.ssl = self._ssl  # uvicorn hands it to loop.create_server for our socket
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped it
                raise OSError(f"the HTTP server on {host}:{port} stopped while starting")
            await asyncio.sleep(0.01)
        self.port = sock.getsockname()[1]
        log.info("SERVING %s on port %d", "HTTPS" if self._ssl else "HTTP", self.port)
        return self.port

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (at most the drain timeout), close."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server, self._task = None, None
