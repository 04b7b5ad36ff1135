"""`vision line`: stream a camera, a video file or a folder of images to `Inspect`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from line.annotate import AnnotatedVideo
from line.journal import Journal
from line.progress import ProgressLine, Stats
from line.reader import Captured, FrameBuffer, FrameReader
from line.records import verdict_record
from line.reject import Action, RejectWorker, command_action, post_action
from line.sources import Source, open_source
from line.stream import LineStream
from line.wire import ENCODINGS, POLICIES, StreamSettings
from protos.vision.v1 import vision_pb2 as pb
from serving.client_args import add_client_security_args, client_tls, client_token
from serving.security.tls import TlsError
from vision.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vision line`."""
    p = argparse.ArgumentParser(prog="vision line", description=__doc__)
    p.add_argument(
        "--source", required=True, help="video file, image folder, rtsp://..., /dev/videoN"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--version", default="")
    p.add_argument("--server", default="localhost:8001", help="gRPC address HOST:PORT")
    p.add_argument("--camera", default="", help="camera id (default: the source's name)")
    p.add_argument("--log", type=Path, help="JSONL verdict log, appended")
    p.add_argument("--policy", choices=sorted(POLICIES), default="latest")
    p.add_argument("--max-in-flight", type=int, default=4)
    p.add_argument("--stale-after-ms", type=int, default=1000)
    p.add_argument("--fps", type=float, default=0.0, help="files and folders: pace at this rate")
    p.add_argument("--encoding", choices=ENCODINGS, default="jpeg")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--annotated", type=Path, help="write an annotated video (mp4v)")
    p.add_argument("--reject-command", help="run per FAIL: verdict JSON on stdin, VISION_* env")
    p.add_argument("--reject-url", help="POST the verdict JSON per FAIL (e.g. a PLC gateway)")
    p.add_argument("--drain-s", type=float, default=10.0, help="on stop: wait for verdicts")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_client_security_args(p)
    return p


class VerdictSink:
    """What happens to each verdict: log line, counts, annotated frame, reject action."""

    def __init__(
        self,
        journal: Journal,
        stats: Stats,
        video: AnnotatedVideo | None,
        rejects: RejectWorker | None,
    ) -> None:
        self.journal, self.stats, self.video, self.rejects = journal, stats, video, rejects

    def __call__(self, verdict: pb.Verdict, frame: Captured) -> None:
        """Handle one verdict (on the stream's thread, in sequence order)."""
        record = verdict_record(verdict, frame.capture_ns, time.time_ns())
        self.journal.write(record)
        self.stats.add(record)
        if self.video is not None:
            self.video.write(frame.image, record)
        if self.rejects is not None and record["status"] == "FAIL":
            self.rejects.submit(record)

    def close(self) -> None:
        """Finish reject actions and the video."""
        if self.rejects is not None:
            self.rejects.close()
        if self.video is not None:
            self.video.close()


def reject_worker(args: argparse.Namespace, journal: Journal) -> RejectWorker | None:
    """The reject worker for `--reject-command` / `--reject-url`, started; None without."""
    actions: list[Action] = []
    if args.reject_command:
        actions.append(command_action(args.reject_command))
    if args.reject_url:
        actions.append(post_action(args.reject_url))
    if not actions:
        return None
    worker = RejectWorker(actions, journal)
    worker.start()
    return worker


def install_stop(stop: threading.Event) -> dict[int, object]:
    """SIGINT / SIGTERM: stop reading, let the server answer what it holds, exit.

    Returns the handlers it replaced (restored when `main` returns)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def open_for_reading(args: argparse.Namespace) -> Source:
    """The source; files and folders are opened now, so that a bad path fails at once."""
    source = open_source(args.source)
    if not source.live:
        source.open()
    return source


def stream_settings(args: argparse.Namespace, source: Source) -> StreamSettings:
    """What the stream asks of the server, from the flags."""
    return StreamSettings(
        model=args.model,
        camera=args.camera or source.name,
        policy=args.policy,
        max_in_flight=args.max_in_flight,
        stale_after_ms=args.stale_after_ms,
        version=args.version,
        encoding=args.encoding,
        jpeg_quality=args.jpeg_quality,
    )


def main(argv: list[str]) -> int:
    """Run the line client until the source ends or it is stopped."""
    args = build_parser().parse_args(argv)
    token, tls = client_token(args), client_tls(args)
    if tls is not None:
        try:
            tls.credentials()  # a file that cannot be read fails now, before the camera opens
        except TlsError as exc:
            raise ConfigError(f"vision line: {exc}") from exc
    source = open_for_reading(args)
    stop = threading.Event()
    previous = install_stop(stop)
    journal = Journal(args.log)
    every = args.policy == "every"
    buffer = FrameBuffer(max(2, args.max_in_flight) if every else 1, replace=not every, stop=stop)
    stats = Stats(skipped=lambda: buffer.replaced)
    video = AnnotatedVideo(args.annotated, args.fps or source.fps()) if args.annotated else None
    sink = VerdictSink(journal, stats, video, reject_worker(args, journal))
    reader = FrameReader(source, buffer, journal, stop, pace_fps=args.fps)
    stream = LineStream(
        args.server,
        stream_settings(args, source),
        buffer,
        sink,
        journal,
        stop,
        token,
        args.drain_s,
        tls=tls,
    )
    progress = ProgressLine(stats, stop)
    reader.start()
    if not args.quiet:
        progress.start()
    try:
        stream.run()
    finally:
        stop.set()
        reader.join(5)
        sink.close()
        if not args.quiet:
            progress.show(final=True)
        journal.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if reader.error is not None:
        raise reader.error
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
