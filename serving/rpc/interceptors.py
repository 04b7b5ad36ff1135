"""The one place where errors become gRPC status codes (documented in the README)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
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
    """Turns exceptions from unary handlers into status codes; never lets one escape."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler.unary_unary, details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _guarded(behaviour: Callable, method: str) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except VisionError as exc:
            code = status_for(exc)
            log.info("%s -> %s: %s", method, code.name, type(exc).__name__)
            await context.abort(code, error_message(exc))
        except Exception as exc:
            # Details (which never include request contents) go to the log only.
            log.exception("%s failed unexpectedly", method)
            await context.abort(grpc.StatusCode.INTERNAL, error_message(exc))

    return call


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <key>` metadata, except on health checks."""

    OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

    def __init__(self, api_key: str) -> None:
        self._expected = f"Bearer {api_key}"

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method.startswith(self.OPEN_PREFIXES):
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        if metadata.get("authorization") == self._expected:
            return await continuation(details)
        return grpc.unary_unary_rpc_method_handler(_deny)


async def _deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "missing or wrong API key: send metadata 'authorization: Bearer <key>'",
    )
