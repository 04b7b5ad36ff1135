"""vision.v1 `Inspect`: the bidirectional stream per camera, translated to `serving.streaming`.

The first message must be a `StreamConfig` (else INVALID_ARGUMENT); an unknown or unready model
ends the call NOT_FOUND / UNAVAILABLE before any frame is read. Then each `Frame` becomes a
`StreamFrame` and each `FrameVerdict` a `Verdict`; a frame's error is reported in its verdict
with the status a unary call would get (`status_for`, `error_message`), and the stream goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

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
        async for verdict in session.verdicts(_frames(requests)):
            yield verdict_message(verdict, session.settings)


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
