"""The one place where errors become HTTP statuses (documented in the README).

Mirrors `serving/rpc/interceptors.py`: the same domain errors, the same messages; every error
body is JSON `{"error": "..."}`, as KServe v2 REST and Triton answer.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vision.errors import (
    DeadlineExceededError,
    ImageTooLargeError,
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    QueueFullError,
    VisionError,
)

log = logging.getLogger(__name__)

# Most specific first: UnsupportedFormatError is an InvalidInputError. gRPC's RESOURCE_EXHAUSTED
# splits in two: an image too large is the request's own fault (413, do not retry), a full
# queue is the server's load (429, retry later).
HTTP_STATUSES: tuple[tuple[type[VisionError], int], ...] = (
    (InvalidInputError, 400),
    (ImageTooLargeError, 413),
    (QueueFullError, 429),
    (ModelNotFoundError, 404),
    (ModelUnavailableError, 503),
    (DeadlineExceededError, 504),
)
INTERNAL = 500
INTERNAL_MESSAGE = "internal error ({}); the server log has the details"


def http_status_for(error: BaseException) -> int:
    """The HTTP status for `error`; 500 for anything unexpected."""
    for error_type, status in HTTP_STATUSES:
        if isinstance(error, error_type):
            return status
    return INTERNAL


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A KServe error body: `{"error": message}` with `status`."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def vision_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for domain errors (`vision.errors.VisionError`)."""
    status = http_status_for(exc)
    log.info("%s %s -> %d: %s", request.method, request.url.path, status, type(exc).__name__)
    retry_after_ms = getattr(exc, "retry_after_ms", 0)
    headers = {"Retry-After": str(max(1, -(-retry_after_ms // 1000)))} if retry_after_ms else None
    return error_response(status, str(exc) or type(exc).__name__, headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for HTTPException (unknown route, wrong method, body size)."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, exc.headers)


EXCEPTION_HANDLERS = {VisionError: vision_error_handler, HTTPException: http_exception_handler}


class UnexpectedErrorMiddleware:
    """Answers 500 with the error's type only and logs the traceback, for anything unhandled.

    Innermost middleware: what the exception handlers above did not take arrives here, and the
    connection stays usable (Starlette's own catch-all re-raises to the server).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer 500 for an unhandled error if no response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            # Details (which never include request contents) go to the log only.
            log.exception("%s %s failed unexpectedly", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(INTERNAL, INTERNAL_MESSAGE.format(type(exc).__name__))
            await response(scope, receive, send)
