"""A call whose deadline passed ends without a status sent (real loopback grpc.aio server).

Sending a status on a call gRPC's core already ended fails in the core, and grpc.aio logs that
as "ExecuteBatchError raised in core" with a traceback; under overload that was one ERROR per
expired call. The error mapping now ends such a call the way a cancelled one ends.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest

from serving.admission import OverloadedError
from serving.rpc.interceptors import ErrorMappingInterceptor
from vision.errors import DeadlineExceededError

SERVICE = "test.Slow"
DEADLINE_S = 0.5


def _handler(ended: asyncio.Event, codes: list, error: Exception) -> grpc.GenericRpcHandler:
    def done(context: grpc.aio.ServicerContext) -> None:
        codes.append(context.code())  # what the handler set: None unless it aborted
        ended.set()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.add_done_callback(done)
        # Block the event loop past the deadline, as a loaded server's loop is: gRPC's core
        # ends the call meanwhile, and the loop has not yet seen that it did.
        time.sleep(context.time_remaining() + 0.3)
        raise error

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Say": grpc.unary_unary_rpc_method_handler(slow)}
    )


async def _expire(error: Exception) -> tuple[grpc.StatusCode, list]:
    ended, codes = asyncio.Event(), []
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers((_handler(ended, codes, error),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(f"/{SERVICE}/Say")(b"x", timeout=DEADLINE_S)
            await asyncio.wait_for(ended.wait(), 60)
            await asyncio.sleep(0.2)  # the server task's last log lines, if any
    finally:
        await server.stop(None)
    return info.value.code(), codes


@pytest.mark.parametrize(
    "error",
    [DeadlineExceededError("the deadline passed"), OverloadedError("full", 10)],
    ids=["deadline", "refused"],
)
def test_an_expired_call_is_not_aborted_and_logs_no_traceback(error, caplog):
    caplog.set_level(logging.INFO)
    code, server_codes = asyncio.run(_expire(error))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server_codes == [None]  # no status was sent: the call was not aborted
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
