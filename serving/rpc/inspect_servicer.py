"""vision.v1 `Inspect`: the bidirectional stream per camera, translated to `serving.streaming`.

The first message must be a `StreamConfig` (else INVALID_ARGUMENT); an unknown or unready model
ends the call NOT_FOUND / UNAVAILABLE before any frame is read. Then each `Frame` becomes a
`StreamFrame` and each `FrameVerdict` a `Verdict`; a frame's error is reported in its verdict
with the status a unary call would get (`status_for`, `error_message`), and the stream goes on.

A client that stops reading its verdicts is pushed back by flow control: the session holds at
most its window of frames and reads no more, so the server's memory stays bounded. If a verdict
then stays unsent for `STALL_TIMEOUT_S`, the stream is reset (the client sees CANCELLED: no
status can pass the verdicts it does not read) and everything it held is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import grpc

from protos.vision.v1 import vision_pb2 as pb
from serving.dataplane import Prediction
from serving.rpc.interceptors import error_message, status_for
from serving.rpc.vision_servicer import (
    VisionServicer,
    _detection_message,
    _mask_message,
    image_source,
)
from serving.streaming import (
    DROPPED,
    ERROR,
    FAIL,
    PASS,
    FrameVerdict,
    InspectSession,
    StreamFrame,
    StreamSettings,
)
from vision.errors import InvalidInputError, VisionError
from vision.types import DetectionResult

log = logging.getLogger(__name__)

STALL_TIMEOUT_S = 30.0  # a verdict unsent for this long ends the stream

_POLICIES = {
    pb.STREAM_POLICY_UNSPECIFIED: "every",
    pb.STREAM_POLICY_EVERY: "every",
    pb.STREAM_POLICY_LATEST: "latest",
}
_STATUSES = {
    PASS: pb.VERDICT_STATUS_PASS,
    FAIL: pb.VERDICT_STATUS_FAIL,
    DROPPED: pb.VERDICT_STATUS_DROPPED,
    ERROR: pb.VERDICT_STATUS_ERROR,
}


class StreamingVisionServicer(VisionServicer):
    """The vision.v1 service: the unary methods of `VisionServicer`, and `Inspect`."""

    async def Inspect(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.InspectRequest], context
    ) -> AsyncIterator[pb.Verdict]:
        """A verdict per frame, in order, under the stream's policy."""
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            first = pb.InspectRequest()
        if first.WhichOneof("item") != "config":
            raise InvalidInputError("the first message of an Inspect stream must be its config")
        session = InspectSession.open(self._plane, stream_settings(first.config))
        verdicts = session.verdicts(_frames(requests))
        watchdog = StallWatchdog(STALL_TIMEOUT_S, context, verdicts)
        try:
            async for verdict in verdicts:
                with watchdog.sending():
                    yield verdict_message(verdict, session.settings)
        finally:
            watchdog.stop()


class StallWatchdog:
    """Ends a stream whose verdict stays unsent (a client that does not read) for longer than
    `timeout_s`: queues RESOURCE_EXHAUSTED behind the verdicts already sent, closes the session
    (its frames, tasks and gauges) and cancels the task that was writing."""

    def __init__(
        self, timeout_s: float, context: grpc.aio.ServicerContext, session: AsyncGenerator
    ) -> None:
        self._timeout_s = timeout_s
        self._context = context
        self._session = session
        self._abort: asyncio.Task | None = None
        self._call = asyncio.current_task()
        self._since: float | None = None
        self._task = asyncio.get_running_loop().create_task(self._watch())

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """Mark a verdict as being written for the duration of the block."""
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._timeout_s / 4))
            since = self._since
            if since is not None and time.monotonic() - since > self._timeout_s:
                log.warning(
                    "Inspect: the client read no verdict for %.0f s; ending its stream",
                    self._timeout_s,
                )
                await self._session.aclose()  # suspended at its yield: releases everything
                # The status goes out behind the verdicts the client has not read: never await
                # it here (it may never complete); the task ends with the connection.
                self._abort = asyncio.get_running_loop().create_task(self._refuse())
                if self._call is not None:
                    self._call.cancel()
                return

    async def _refuse(self) -> None:
        with contextlib.suppress(Exception):  # AbortError once the status is queued
            await self._context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"no verdict was read for {self._timeout_s:.0f} s: read the stream's verdicts "
                "as they come, or open it with a smaller max_in_flight",
            )

    def stop(self) -> None:
        """Stop watching (the stream ended)."""
        self._task.cancel()


def stream_settings(config: pb.StreamConfig) -> StreamSettings:
    """The stream's settings in domain terms (defaults applied by the session)."""
    if config.policy not in _POLICIES:
        raise InvalidInputError(f"config.policy {config.policy} is not a StreamPolicy")
    rle = config.mask_encoding == pb.MASK_ENCODING_RLE
    return StreamSettings(
        model=config.model.name,
        version=config.model.version,
        camera_id=config.camera_id,
        policy=_POLICIES[config.policy],
        max_in_flight=config.max_in_flight,
        stale_after_ms=config.stale_after_ms,
        mask_encoding="rle" if rle else "png",
    )


async def _frames(requests: AsyncIterator[pb.InspectRequest]) -> AsyncIterator[StreamFrame]:
    """The frames after the config; a second config or an empty message breaks the stream."""
    async for request in requests:
        if request.WhichOneof("item") != "frame":
            raise InvalidInputError(
                "after the config, every message of an Inspect stream must be a frame"
            )
        yield _stream_frame(request.frame)


def _stream_frame(frame: pb.Frame) -> StreamFrame:
    try:
        source = image_source(frame.image)
    except VisionError as exc:  # the frame's own error verdict says why
        return StreamFrame(frame.sequence, frame.capture_time_unix_ns, error=exc)
    return StreamFrame(frame.sequence, frame.capture_time_unix_ns, image=source)


def verdict_message(verdict: FrameVerdict, settings: StreamSettings) -> pb.Verdict:
    """The wire form of one frame's verdict."""
    message = pb.Verdict(
        camera_id=settings.camera_id,
        sequence=verdict.sequence,
        status=_STATUSES[verdict.status],
        hits=[
            pb.RuleHit(rule=h.rule, label=h.label, score=h.score, pixel_area=h.pixel_area)
            for h in verdict.hits
        ],
        model_name=settings.model,
        server_latency_ms=verdict.server_latency_ms,
        frame_age_ms=verdict.frame_age_ms,
    )
    if verdict.error is not None:
        message.error.CopyFrom(
            pb.FrameError(code=status_for(verdict.error).name, message=error_message(verdict.error))
        )
    if verdict.prediction is not None:
        _add_findings(message, verdict)
    return message


def _add_findings(message: pb.Verdict, verdict: FrameVerdict) -> None:
    prediction: Prediction = verdict.prediction  # type: ignore[assignment]
    message.model_name = prediction.model
    message.model_version = prediction.version
    message.timings.CopyFrom(pb.Timings(**prediction.timings))
    result = prediction.result
    if isinstance(result, DetectionResult):
        message.detections.extend(_detection_message(d) for d in result.detections)
        return
    encoded = verdict.encoded.masks if verdict.encoded is not None else []
    spacing = prediction.image.pixel_spacing_mm
    message.masks.extend(
        _mask_message(mask, data, spacing) for mask, data in zip(result.masks, encoded, strict=True)
    )
    if result.image_score is not None:
        message.image_score = result.image_score
