"""The one place where errors become gRPC status codes (documented in the README)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

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

# Most specific first: UnsupportedFormatError is an InvalidInputError.
STATUS_CODES: tuple[tuple[type[VisionError], grpc.StatusCode], ...] = (
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (ImageTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ModelUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_for(error: BaseException) -> grpc.StatusCode:
    """The status code for `error`; INTERNAL for anything unexpected."""
    for error_type, code in STATUS_CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def error_message(error: BaseException) -> str:
    """What the client reads. Unexpected errors say only their type (details stay in the log)."""
    if isinstance(error, VisionError):
        return str(error) or type(error).__name__
    return f"internal error ({type(error).__name__}); the server log has the details"


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions from any handler (unary or streaming) into status codes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the method's handler so that its errors become status codes."""
        handler = await continuation(details)
        if handler is None:
            return handler
        return _rewrap(handler, details.method, _guarded, _guarded_stream)


def _rewrap(
    handler: grpc.RpcMethodHandler, method: str, unary: Callable, streaming: Callable
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped: `unary` for a single response, else `streaming`."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary, method), **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary, method), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streaming(handler.unary_stream, method), **codec
        )
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream, method), **codec)


async def _abort_for(exc: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
    if isinstance(exc, VisionError):
        code = status_for(exc)
        log.info("%s -> %s: %s", method, code.name, type(exc).__name__)
        await context.abort(code, error_message(exc))
    # Details (which never include request contents) go to the log only.
    log.error("%s failed unexpectedly", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, error_message(exc))


def _guarded(behaviour: Callable, method: str) -> Callable:
    """A unary-response behaviour whose exceptions become status codes."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, none escapes
            await _abort_for(exc, method, context)

    return call


def _guarded_stream(behaviour: Callable, method: str) -> Callable:
    """A streaming-response behaviour (async generator) whose exceptions become status codes."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behaviour(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, none escapes
            await _abort_for(exc, method, context)

    return call


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <key>` metadata, except on health checks.

    The key is compared in constant time; a refused call of any kind (unary or streaming)
    ends UNAUTHENTICATED before its handler runs.
    """

    OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

    def __init__(self, api_key: str) -> None:
        self._expected = f"Bearer {api_key}".encode()

    def allows(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        """Whether the call's metadata carries the right key."""
        given = dict(metadata or ()).get("authorization", "")
        given = given.encode() if isinstance(given, str) else given
        return hmac.compare_digest(given, self._expected)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        """Let the call through with the right key (or to health); refuse it otherwise."""
        if details.method.startswith(self.OPEN_PREFIXES) or self.allows(
            details.invocation_metadata
        ):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return handler
        return _rewrap(handler, details.method, _denied, _denied_stream)


_DENIED = "missing or wrong API key: send metadata 'authorization: Bearer <key>'"


def _denied(behaviour: Callable, method: str) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)

    return call


def _denied_stream(behaviour: Callable, method: str) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
        yield  # pragma: no cover - abort raises; this makes the function an async generator

    return call
