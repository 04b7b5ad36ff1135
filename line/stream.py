"""The `Inspect` stream with reconnects: frames out, verdicts back in order.

At most `max_in_flight` frames are sent and unanswered (the client's window; with policy
`latest` the frame sent is always the newest one read). When the server goes away the stream is
reopened with back-off and the unanswered frames are sent again first, under their sequence
numbers (with `latest` the server drops those that went stale, and says so).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from line.backoff import Backoff
from line.journal import Journal
from line.reader import Captured, FrameBuffer
from line.wire import StreamSettings
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc as pb_grpc
from serving.config import DEFAULT_MAX_MESSAGE_BYTES
from serving.security.tls import ClientTls
from vision.errors import VisionError

FATAL = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
OnVerdict = Callable[[pb.Verdict, Captured], None]


class StreamError(VisionError):
    """The server refused the stream for good (unknown model, bad config, wrong API key)."""


def open_channel(address: str, backoff_cap_s: float, tls: ClientTls | None = None) -> grpc.Channel:
    """A channel whose own reconnect back-off is short (the stream retries on top of it);
    over TLS (or mutual TLS) when `tls` names the files."""
    size = DEFAULT_MAX_MESSAGE_BYTES
    options = [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", int(backoff_cap_s * 1000)),
        ("grpc.keepalive_time_ms", 10000),
        ("grpc.keepalive_timeout_ms", 5000),
    ]
    if tls is not None:
        return grpc.secure_channel(address, tls.credentials(), options=options)
    return grpc.insecure_channel(address, options=options)


class InFlight:
    """Frames sent and not answered yet, in sequence order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: collections.OrderedDict[int, Captured] = collections.OrderedDict()
        self.cond = threading.Condition()

    def wait_room(self, timeout: float) -> bool:
        """Whether there is room for one more frame (waits at most `timeout`)."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.frames) < self.limit, timeout)

    def add(self, frame: Captured) -> None:
        """Hold a frame that was just sent."""
        with self.cond:
            self.frames[frame.sequence] = frame

    def pop(self, sequence: int) -> Captured | None:
        """The frame a verdict answers (None when it is not held)."""
        with self.cond:
            frame = self.frames.pop(sequence, None)
            self.cond.notify_all()
            return frame

    def snapshot(self) -> list[Captured]:
        """The unanswered frames, oldest first."""
        with self.cond:
            return list(self.frames.values())


class LineStream:
    """Streams the frames of `buffer` until the source ends or `stop` is set."""

    def __init__(
        self,
        address: str,
        settings: StreamSettings,
        buffer: FrameBuffer,
        on_verdict: OnVerdict,
        journal: Journal,
        stop: threading.Event,
        api_key: str = "",
        drain_s: float = 10.0,
        backoff: Backoff | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.settings, self.buffer, self.on_verdict = settings, buffer, on_verdict
        self.journal, self.stop, self.drain_s = journal, stop, drain_s
        self.backoff = backoff or Backoff()
        self.channel = open_channel(address, self.backoff.cap_s, tls)
        self.stub = pb_grpc.VisionServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.in_flight = InFlight(settings.max_in_flight or 4)
        self.next_sequence = 1
        self.source_ended = False
        self._session = 0
        self._lock = threading.Lock()
        self._reconnecting = False

    def run(self) -> None:
        """Open streams until the work is done; raises StreamError when refused for good."""
        try:
            while True:
                failure = self._session_once()
                if self.stop.is_set():
                    break
                if failure is None:
                    if not self.in_flight.snapshot():
                        break
                    failure = Failure(
                        grpc.StatusCode.UNAVAILABLE, "stream ended, frames unanswered"
                    )
                self._retry(failure)
                if self.stop.is_set():
                    break
        finally:
            left = len(self.in_flight.snapshot())
            if left:
                self.journal.event("unanswered", frames=left)
            self.channel.close()

    def _retry(self, failure: Failure) -> None:
        if failure.code in FATAL:
            raise StreamError(f"{failure.code.name}: {failure.details}")
        with self._lock:
            self._session += 1  # the old generator takes no more frames
        attempt, delay = self.backoff.wait(self.stop)
        self.journal.event(
            "reconnect",
            target="server",
            attempt=attempt,
            delay_s=delay,
            error=f"{failure.code.name}: {failure.details}",
            resend=len(self.in_flight.snapshot()),
        )
        self._reconnecting = True

    def _session_once(self) -> Failure | None:
        """One stream; None when it ended as asked (source done or stopped)."""
        with self._lock:
            self._session += 1
            session = self._session
        call = self.stub.Inspect(self._requests(session), metadata=self.metadata)
        threading.Thread(target=self._guard, args=(call,), daemon=True).start()
        try:
            for verdict in call:
                self._answer(verdict)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self.stop.is_set():
                return None
            return Failure(exc.code(), exc.details() or "")
        if not (self.source_ended or self.stop.is_set()):
            return Failure(grpc.StatusCode.UNAVAILABLE, "the server ended the stream")
        return None

    def _answer(self, verdict: pb.Verdict) -> None:
        if self._reconnecting:
            self._reconnecting = False
            self.journal.event("reconnected", target="server", sequence=verdict.sequence)
        self.backoff.reset()
        frame = self.in_flight.pop(verdict.sequence)
        if frame is None:
            self.journal.event("unexpected_verdict", sequence=verdict.sequence)
            return
        self.on_verdict(verdict, frame)

    def _guard(self, call: grpc.Future) -> None:
        """After a stop, give the server `drain_s` to answer what it holds, then cancel."""
        while not self.stop.wait(0.2):
            if call.done():
                return
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline and not call.done():
            time.sleep(0.05)
        if not call.done():
            call.cancel()

    def _requests(self, session: int) -> Iterator[pb.InspectRequest]:
        yield self.settings.config_request()
        for frame in self.in_flight.snapshot():
            yield self.settings.frame_request(frame)
        while not self.stop.is_set() and session == self._session:
            if not self.in_flight.wait_room(0.1):
                continue
            try:
                frame = self._take(session)
            except EOFError:
                self.source_ended = True
                return
            if frame is not None:
                yield self.settings.frame_request(frame)

    def _take(self, session: int) -> Captured | None:
        """The next frame, numbered and held; None when none came or the session is over."""
        with self._lock:
            if session != self._session:
                return None
            frame = self.buffer.get(0.05)
            if frame is None:
                return None
            frame.sequence = self.next_sequence
            self.next_sequence += 1
            self.in_flight.add(frame)
            return frame


@dataclass(frozen=True)
class Failure:
    """Why a stream ended before its work was done."""

    code: grpc.StatusCode
    details: str
