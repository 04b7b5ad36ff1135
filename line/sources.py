"""Frame sources: a video file, a folder of images, an RTSP URL or a V4L2 device.

Every source gives BGR uint8 frames (OpenCV's order). Live sources (RTSP, devices) are reopened
by the reader when they fail; files and folders end.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from vision.errors import VisionError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 3000


class SourceError(VisionError):
    """A source that cannot be opened (a file or folder: at start, one line, exit 2)."""


class Source(Protocol):
    """What the reader needs from a source."""

    name: str
    live: bool

    def open(self) -> None:
        """Open (or reopen) the source; raises SourceError."""

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end (file) or on failure (live)."""

    def fps(self) -> float:
        """The source's own frame rate (0 when unknown)."""

    def release(self) -> None:
        """Close the source."""


class CaptureSource:
    """A `cv2.VideoCapture`: a file or URL through FFmpeg, or a device through V4L2."""

    def __init__(self, target: str | int, live: bool, name: str) -> None:
        self.target, self.live, self.name = target, live, name
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        """Open with explicit open and read timeouts (FFmpeg); RTSP goes over TCP."""
        self.release()
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                READ_TIMEOUT_MS,
            ]
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, timeouts)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name}")
        self._cap = cap

    def read(self) -> np.ndarray | None:
        """The next frame (BGR), or None."""
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        return frame if ok else None

    def fps(self) -> float:
        """CAP_PROP_FPS (0 when the container does not say)."""
        return float(self._cap.get(cv2.CAP_PROP_FPS)) if self._cap is not None else 0.0

    def release(self) -> None:
        """Release the capture."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource:
    """The images of a folder in name order, each read once."""

    live = False

    def __init__(self, folder: Path) -> None:
        self.name = str(folder)
        self._folder = folder
        self._files: list[Path] = []

    def open(self) -> None:
        """List the folder's images; none is an error."""
        self._files = sorted(
            p for p in self._folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self._files:
            raise SourceError(f"no images in {self._folder}")

    def read(self) -> np.ndarray | None:
        """The next image; an unreadable file is an error (the folder is the line's input)."""
        if not self._files:
            return None
        path = self._files.pop(0)
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise SourceError(f"cannot read image {path}")
        return frame

    def fps(self) -> float:
        """Folders have no rate of their own."""
        return 0.0

    def release(self) -> None:
        """Nothing to release."""


def open_source(spec: str) -> Source:
    """The source for `--source`: URL, /dev/videoN, folder or video file (not opened yet)."""
    if "://" in spec:
        if spec.startswith("rtsp"):
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        return CaptureSource(spec, live=True, name=spec)
    device = re.fullmatch(r"/dev/video(\d+)", spec)
    if device:
        return CaptureSource(int(device.group(1)), live=True, name=spec)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file or folder: {spec}")
    return CaptureSource(str(path), live=False, name=spec)
