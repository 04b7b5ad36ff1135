"""The one place where errors become gRPC status codes (documented in the README), and the
authentication / authorisation / rate-limit check every call passes first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import grpc

from serving.security.guard import Call, Guard, Outcome, Verdict
from serving.security.policy import GRPC_POLICY, OPEN, SIGNED_IN, Access
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
    if isinstance(error, NotImplementedError):  # a generated servicer's method left as is
        return grpc.StatusCode.UNIMPLEMENTED
    return grpc.StatusCode.INTERNAL


def error_message(error: BaseException) -> str:
    """What the client reads. Unexpected errors say only their type (details stay in the log)."""
    if isinstance(error, VisionError):
        return str(error) or type(error).__name__
    if isinstance(error, NotImplementedError):
        return "this server does not implement the method"
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
        "request_deserializer": _tolerant(handler.request_deserializer),
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


class _Undecodable:
    """What a request that is not a valid protobuf message deserialises to (see `_tolerant`)."""


UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable | None) -> Callable | None:
    """`deserializer`, returning UNDECODABLE instead of raising: grpc would answer UNKNOWN."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - DecodeError, or a lean codec's own
            return UNDECODABLE

    return parse


def _undecodable(method: str) -> InvalidInputError:
    return InvalidInputError(f"the request is not a valid {method} message (protobuf)")


async def _decoded_stream(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    """A request stream whose undecodable message raises InvalidInputError."""
    async for request in requests:
        if request is UNDECODABLE:
            raise _undecodable(method)
        yield request


def _decoded(request: Any, method: str) -> Any:
    """The request (or stream of requests), refused when it could not be deserialised."""
    if request is UNDECODABLE:
        raise _undecodable(method)
    return _decoded_stream(request, method) if hasattr(request, "__aiter__") else request


def _ended(context: grpc.aio.ServicerContext) -> bool:
    """Whether the call's deadline has passed or the client cancelled it: no status can be
    sent any more (the client has its own DEADLINE_EXCEEDED or CANCELLED)."""
    return context.time_remaining() == 0 or context.cancelled()


async def _abort_for(exc: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
    if _ended(context):
        # Sending a status on an ended call fails in gRPC's core (ExecuteBatchError, logged
        # with a traceback). The request was counted as abandoned where it ended
        # (`serving.accounting`); the call just ends, as a cancelled one does.
        if not isinstance(exc, VisionError):
            log.error("%s failed unexpectedly after its call ended", method, exc_info=exc)
        raise asyncio.CancelledError from exc
    if isinstance(exc, VisionError | NotImplementedError):
        code = status_for(exc)
        log.info("%s -> %s: %s", method, code.name, type(exc).__name__)
        retry_after_ms = getattr(exc, "retry_after_ms", 0)
        if retry_after_ms:  # gRFC A6: a client's retry policy waits this long
            context.set_trailing_metadata((("grpc-retry-pushback-ms", str(retry_after_ms)),))
        await context.abort(code, error_message(exc))
    # Details (which never include request contents) go to the log only.
    log.error("%s failed unexpectedly", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, error_message(exc))


def _guarded(behaviour: Callable, method: str) -> Callable:
    """A unary-response behaviour whose exceptions become status codes."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(_decoded(request, method), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, none escapes
            await _abort_for(exc, method, context)

    return call


async def responses(
    behaviour: Callable, request: Any, context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    """What a streaming-response behaviour answers: an async generator's items, or nothing
    for a coroutine that writes with `context.write` (as grpc's health `Watch` does)."""
    result = behaviour(request, context)
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    else:
        await result


def _guarded_stream(behaviour: Callable, method: str) -> Callable:
    """A streaming-response behaviour whose exceptions become status codes."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in responses(behaviour, _decoded(request, method), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, none escapes
            await _abort_for(exc, method, context)

    return call


DENIAL_CODES = {
    Outcome.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Outcome.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Outcome.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer (`ipv4:10.0.0.1:5000` -> `10.0.0.1`, `ipv6:[::1]:5`)."""
    kind, _, rest = unquote(peer or "").partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return rest or kind or "unknown"


def _effective(access: Access | None, request: Any) -> Access | None:
    """Health answers anonymously only for the whole server (service ""), which names no model."""
    if access is not None and access.kind == "health":
        return OPEN if not getattr(request, "service", "") else SIGNED_IN
    return access


def _subject(request: Any) -> str:
    """The model an admin call acts on, for the audit log."""
    for field in ("model_name", "name"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call (unary or streaming) against `guard` before its handler runs.

    No or an unknown token: UNAUTHENTICATED; a token without the method's role (or a method
    with no rule in `policy`): PERMISSION_DENIED; over the rate limit: RESOURCE_EXHAUSTED.
    """

    def __init__(self, guard: Guard, policy: Mapping[str, Access] = GRPC_POLICY) -> None:
        self._guard = guard
        self._policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the method's handler so that the check runs first."""
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        values = [v for k, v in (details.invocation_metadata or ()) if k == "authorization"]

        async def judge(request: Any, context: grpc.aio.ServicerContext) -> None:
            await self._judge(method, values, request, context)

        return _rewrap(handler, method, _checked(judge), _checked_stream(judge))

    async def _judge(
        self,
        method: str,
        values: Sequence[str | bytes],
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> None:
        access = _effective(self._policy.get(method), request)
        call = Call("grpc", method, access, values, peer_host(context.peer()), _subject(request))
        verdict = await self._check(call)
        if not verdict.allowed:
            await context.abort(DENIAL_CODES[verdict.outcome], verdict.message)

    async def _check(self, call: Call) -> Verdict:
        if self._guard.store.has_slow_entries:  # scrypt: keep it off the event loop
            return await asyncio.to_thread(self._guard.check, call)
        return self._guard.check(call)


Judge = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]


def _checked(judge: Judge) -> Callable:
    def wrap(behaviour: Callable, method: str) -> Callable:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await judge(request, context)
            return await behaviour(request, context)

        return call

    return wrap


def _checked_stream(judge: Judge) -> Callable:
    def wrap(behaviour: Callable, method: str) -> Callable:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await judge(request, context)
            async for response in responses(behaviour, request, context):
                yield response

        return call

    return wrap
