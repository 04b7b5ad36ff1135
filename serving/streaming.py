"""Inspect streams: one session per camera stream, frames in, verdicts out in sequence order.

Transport-free (the gRPC translation is `serving/rpc/inspect_servicer.py`). A session reads
frames from an async iterator and answers each with a `FrameVerdict`:

- every frame goes through `DataPlane.predict` (origin "stream"), so streams share the model's
  admission bound and dynamic batcher with the unary APIs (a frame waits for admission, its
  window already bounds the stream; under `latest` a frame whose staleness deadline admission
  says cannot be met is DROPPED before decoding); the verdict is PASS or FAIL under the
  model's inspection rules (`vision.inspection.judge`);
- at most `max_in_flight` frames are held at once (decoding, queued, inferring, or done and
  waiting for an earlier frame's verdict): the reader takes the next frame from the transport
  only when a frame's verdict has been sent, so a fast sender is pushed back by the transport's
  flow control and memory stays bounded;
- policy `latest`: a frame older than `stale_after_ms` (from its capture time) when its turn
  comes, or still queued when it gets that old, is not inspected: DROPPED;
- a frame that cannot be inspected (bad bytes, queue full, ...) gets an ERROR verdict carrying
  the exception, and the stream goes on;
- when the consumer stops (the client cancelled or went away) every task of the stream is
  cancelled and awaited, and the in-flight gauge goes back down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from serving.admission import OverloadedError
from serving.dataplane import DataPlane, ImageSource, Prediction, PredictOptions
from serving.encoding import MASK_ENCODINGS, EncodedPrediction, WireOptions, encode_prediction
from vision.errors import DeadlineExceededError, InvalidInputError, VisionError
from vision.inspection import InspectionRules, RuleHit, judge

log = logging.getLogger(__name__)

ORIGIN = "stream"
POLICIES = ("every", "latest")
DEFAULT_MAX_IN_FLIGHT = 4
MAX_IN_FLIGHT_LIMIT = 64
DEFAULT_STALE_AFTER_MS = 1000

PASS, FAIL, DROPPED, ERROR = "pass", "fail", "dropped", "error"


@dataclass(frozen=True)
class StreamSettings:
    """What the client chose for its stream; 0 means the default for the two limits."""

    model: str
    version: str = ""
    camera_id: str = ""
    policy: str = "every"  # every | latest
    max_in_flight: int = 0  # 0: DEFAULT_MAX_IN_FLIGHT; at most MAX_IN_FLIGHT_LIMIT
    stale_after_ms: int = 0  # latest: 0 means DEFAULT_STALE_AFTER_MS
    mask_encoding: str = "png"  # png | rle

    def resolved(self) -> StreamSettings:
        """The settings with defaults applied; InvalidInputError when a value is out of range."""
        if not self.model:
            raise InvalidInputError("config.model.name is empty: name the model to inspect with")
        if self.policy not in POLICIES:
            raise InvalidInputError(f"policy {self.policy!r} is not one of {list(POLICIES)}")
        if self.mask_encoding not in MASK_ENCODINGS:
            raise InvalidInputError(f"mask encoding {self.mask_encoding!r} is not supported")
        if not 0 <= self.max_in_flight <= MAX_IN_FLIGHT_LIMIT:
            raise InvalidInputError(
                f"max_in_flight {self.max_in_flight}: use 1..{MAX_IN_FLIGHT_LIMIT} (0: default)"
            )
        return StreamSettings(
            model=self.model,
            version=self.version,
            camera_id=self.camera_id,
            policy=self.policy,
            max_in_flight=self.max_in_flight or DEFAULT_MAX_IN_FLIGHT,
            stale_after_ms=self.stale_after_ms or DEFAULT_STALE_AFTER_MS,
            mask_encoding=self.mask_encoding,
        )


@dataclass(frozen=True)
class StreamFrame:
    """One frame as the transport read it: its image, or why the transport could not read it."""

    sequence: int
    capture_time_ns: int = 0  # Unix time in ns; 0: when the server received it
    image: ImageSource | None = None
    error: VisionError | None = None  # set instead of `image` for a frame the transport refused
    arrived: float = field(default_factory=time.monotonic)

    def captured(self) -> float:
        """The capture time on the monotonic clock (arrival when unknown or in the future)."""
        if self.capture_time_ns <= 0:
            return self.arrived
        age_s = (time.time_ns() - self.capture_time_ns) / 1e9
        return time.monotonic() - max(0.0, age_s)


@dataclass
class FrameVerdict:
    """The answer for one frame; `prediction` and `encoded` only when it was inspected."""

    sequence: int
    status: str  # pass | fail | dropped | error
    hits: list[RuleHit] = field(default_factory=list)
    prediction: Prediction | None = None
    encoded: EncodedPrediction | None = None
    error: BaseException | None = None
    server_latency_ms: float = 0.0  # arrival -> verdict
    frame_age_ms: float = 0.0  # capture -> verdict
    arrived: float = 0.0  # monotonic clock
    captured: float = 0.0  # monotonic clock


@dataclass(frozen=True)
class _End:
    """The frame reader is done: the input ended, or broke with `error`."""

    error: BaseException | None = None


class InspectSession:
    """One Inspect stream over the data plane; create it with `open`, then run `verdicts`."""

    def __init__(
        self,
        plane: DataPlane,
        settings: StreamSettings,
        task: str,
        rules: dict[str, InspectionRules],
    ) -> None:
        self._plane = plane
        self.settings = settings
        self._task = task
        self._rules: dict[str, InspectionRules] = rules  # per served version, read once
        self._window = asyncio.Semaphore(settings.max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        self.in_flight = 0  # frames held now
        self.peak_in_flight = 0  # the most frames held at once
        labels = (settings.model, settings.camera_id)
        self._in_flight_gauge = plane.metrics.stream_frames_in_flight.labels(*labels)
        self._dropped = plane.metrics.stream_frames_dropped.labels(*labels)

    @classmethod
    def open(cls, plane: DataPlane, settings: StreamSettings) -> InspectSession:
        """A session for `settings`; NOT_FOUND / UNAVAILABLE errors when the model cannot serve."""
        settings = settings.resolved()
        info = plane.model_info(settings.model, settings.version)
        rules = {info.version: InspectionRules.from_config(info.config)}
        return cls(plane, settings, info.config.task, rules)

    async def verdicts(self, frames: AsyncIterator[StreamFrame]) -> AsyncIterator[FrameVerdict]:
        """A verdict per frame, in the order the frames came; raises what broke the input."""
        order: asyncio.Queue[asyncio.Task | _End] = asyncio.Queue()
        reader = asyncio.create_task(self._read(frames, order))
        opened = self._plane.metrics.streams_open.labels(self.settings.model)
        opened.inc()
        try:
            while True:
                item = await order.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                verdict = self._finished(await item)
                try:
                    yield verdict
                finally:
                    self._release()
        finally:
            opened.dec()
            await self._shut_down(reader)

    async def _read(self, frames: AsyncIterator[StreamFrame], order: asyncio.Queue) -> None:
        """Take a frame only with room in the window; queue its inspection in arrival order."""
        iterator = frames.__aiter__()
        last: int | None = None
        try:
            while True:
                await self._window.acquire()
                try:
                    frame = await iterator.__anext__()
                except StopAsyncIteration:
                    self._window.release()
                    break
                self._hold()
                order.put_nowait(self._spawn(self._inspect(frame, last)))
                last = frame.sequence if last is None else max(last, frame.sequence)
            order.put_nowait(_End())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the writer, which raises it in order
            order.put_nowait(_End(exc))

    def _spawn(self, coroutine: Coroutine[Any, Any, FrameVerdict]) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _inspect(self, frame: StreamFrame, last: int | None) -> FrameVerdict:
        verdict = FrameVerdict(frame.sequence, ERROR, arrived=frame.arrived)
        verdict.captured = frame.captured()
        if frame.error is not None:
            verdict.error = frame.error
        elif last is not None and frame.sequence <= last:
            verdict.error = InvalidInputError(
                f"frame sequence {frame.sequence} does not follow {last}: sequences must increase"
            )
        elif self._stale(verdict.captured):
            verdict.status = DROPPED
        else:
            await self._predict(frame, verdict)
        return verdict

    def _stale(self, captured: float) -> bool:
        limit_s = self.settings.stale_after_ms / 1000.0
        return self.settings.policy == "latest" and time.monotonic() - captured > limit_s

    async def _predict(self, frame: StreamFrame, verdict: FrameVerdict) -> None:
        """Inspect the frame into `verdict` (its status, hits, findings, or its error)."""
        deadline = None
        if self.settings.policy == "latest":
            deadline = verdict.captured + self.settings.stale_after_ms / 1000.0
        try:
            prediction = await self._plane.predict(
                self._task,
                self.settings.model,
                self.settings.version,
                frame.image,
                PredictOptions(),
                deadline,
                origin=ORIGIN,
            )
            verdict.hits = judge(prediction.result, self._rules_of(prediction.version))
            wire = WireOptions(mask_encoding=self.settings.mask_encoding)
            verdict.encoded = await self._plane.run_post(encode_prediction, prediction, wire)
        except OverloadedError as exc:  # admission: this frame's deadline cannot be met
            if self.settings.policy == "latest":
                verdict.status = DROPPED
            else:
                verdict.error = exc
            return
        except DeadlineExceededError as exc:
            if deadline is None or time.monotonic() < deadline:
                verdict.error = exc
            else:
                verdict.status = DROPPED  # it became stale while queued
            return
        except VisionError as exc:
            verdict.error = exc
            return
        except Exception as exc:  # noqa: BLE001 - one frame's failure never ends the stream
            log.error("inspect stream: a frame failed unexpectedly", exc_info=exc)
            verdict.error = exc
            return
        verdict.prediction = prediction
        verdict.status = FAIL if verdict.hits else PASS

    def _rules_of(self, version: str) -> InspectionRules:
        """The rules of the version that answered (read from its config at first use)."""
        if version not in self._rules:
            config = self._plane.model_info(self.settings.model, version).config
            self._rules[version] = InspectionRules.from_config(config)
        return self._rules[version]

    def _finished(self, verdict: FrameVerdict) -> FrameVerdict:
        """Stamp latency and age as the verdict leaves, and count it."""
        now = time.monotonic()
        verdict.server_latency_ms = (now - verdict.arrived) * 1000.0
        verdict.frame_age_ms = (now - verdict.captured) * 1000.0
        if verdict.status == DROPPED:
            self._dropped.inc()
        labels = (self.settings.model, self.settings.camera_id, verdict.status)
        self._plane.metrics.stream_verdicts.labels(*labels).inc()
        return verdict

    def _hold(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._in_flight_gauge.inc()

    def _release(self) -> None:
        self.in_flight -= 1
        self._in_flight_gauge.dec()
        self._window.release()

    async def _shut_down(self, reader: asyncio.Task) -> None:
        """Cancel the reader and every frame still held; wait for them; zero the gauge."""
        tasks = [reader, *self._tasks]
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("inspect stream: a frame task failed", exc_info=result)
        self._in_flight_gauge.dec(self.in_flight)
        self.in_flight = 0
