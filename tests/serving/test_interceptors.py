"""Error mapping and token checks cover unary and streaming handlers alike (real loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from serving.rpc.interceptors import AuthInterceptor, ErrorMappingInterceptor, peer_host
from serving.security.guard import Guard
from serving.security.policy import INFER_ROLE
from vision.errors import InvalidInputError

KEY = "s3cret-key"
SERVICE = "test.Echo"
POLICY = {f"/{SERVICE}/{name}": INFER_ROLE for name in ("Say", "Chat", "Repeat")}


async def _unary(request: bytes, context) -> bytes:
    if request == b"bad":
        raise InvalidInputError("bad input: send something else")
    if request == b"boom":
        raise RuntimeError("secret detail that must stay in the log")
    return request.upper()


async def _chat(requests: AsyncIterator[bytes], context) -> AsyncIterator[bytes]:
    async for request in requests:
        yield await _unary(request, context)


async def _repeat(request: bytes, context) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield await _unary(request, context)


def _handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Say": grpc.unary_unary_rpc_method_handler(_unary),
            "Chat": grpc.stream_stream_rpc_method_handler(_chat),
            "Repeat": grpc.unary_stream_rpc_method_handler(_repeat),
        },
    )


async def _with_server(api_key: str, body) -> None:
    interceptors = [AuthInterceptor(Guard(api_key=api_key), POLICY), ErrorMappingInterceptor()]
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await body(channel)
    finally:
        await server.stop(None)


def _metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def _chat_replies(channel, messages: list[bytes], key: str = KEY) -> list[bytes]:
    call = channel.stream_stream(f"/{SERVICE}/Chat")(iter(messages), metadata=_metadata(key))
    return [reply async for reply in call]


def _run(body) -> None:
    asyncio.run(_with_server(KEY, body))


def test_stream_stream_passes_with_the_key():
    async def body(channel):
        assert await _chat_replies(channel, [b"a", b"b"]) == [b"A", b"B"]

    _run(body)


@pytest.mark.parametrize(
    ("message", "code", "text"),
    [
        (b"bad", grpc.StatusCode.INVALID_ARGUMENT, "bad input: send something else"),
        (b"boom", grpc.StatusCode.INTERNAL, "internal error (RuntimeError)"),
    ],
)
def test_stream_errors_become_status_codes(message, code, text):
    async def body(channel):
        call = channel.stream_stream(f"/{SERVICE}/Chat")(
            iter([b"ok", message]), metadata=_metadata(KEY)
        )
        replies = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for reply in call:
                replies.append(reply)
        assert replies == [b"OK"]  # what was answered before the error still arrives
        assert info.value.code() == code
        assert text in info.value.details()
        assert "secret detail" not in info.value.details()

    _run(body)


def test_unary_stream_errors_become_status_codes():
    async def body(channel):
        call = channel.unary_stream(f"/{SERVICE}/Repeat")(b"bad", metadata=_metadata(KEY))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [r async for r in call]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    _run(body)


@pytest.mark.parametrize("key", ["", "wrong", KEY + "x"])
def test_streams_refused_without_the_right_key(key):
    async def body(channel):
        metadata = _metadata(key) if key else ()
        chat = channel.stream_stream(f"/{SERVICE}/Chat")(iter([b"a"]), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [r async for r in chat]
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        repeat = channel.unary_stream(f"/{SERVICE}/Repeat")(b"a", metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [r async for r in repeat]
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(f"/{SERVICE}/Say")(b"a", metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    _run(body)


def test_unary_still_mapped():
    async def body(channel):
        say = channel.unary_unary(f"/{SERVICE}/Say")
        assert await say(b"hi", metadata=_metadata(KEY)) == b"HI"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await say(b"bad", metadata=_metadata(KEY))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    _run(body)


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.1.2.3:5000", "10.1.2.3"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B::1%5D:5000", "::1"),
        ("unix:/tmp/socket", "/tmp/socket"),
        ("", "unknown"),
    ],
)
def test_peer_host_drops_the_port(peer, host):
    assert peer_host(peer) == host
