"""The annotated video: each inspected frame with its boxes, labels and PASS/FAIL drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

COLOURS = {"PASS": (0, 170, 0), "FAIL": (0, 0, 230), "DROPPED": (0, 170, 230)}


def draw(frame: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """A copy of `frame` (BGR) with the verdict's boxes and status drawn."""
    out = frame.copy()
    status = record["status"]
    colour = COLOURS.get(status, (200, 200, 200))
    for det in record["findings"]["detections"]:
        x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 230), 2)
        text = f"{det['label']} {det['score']:.2f}"
        cv2.putText(
            out, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 230), 1
        )
    banner = f"{status}  #{record['sequence']}  {record['latency_ms']:.0f} ms"
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 12 + 11 * len(banner)), 26), colour, -1)
    cv2.putText(out, banner, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    return out


class AnnotatedVideo:
    """An mp4v video, opened at the first frame's size; frames of another size are resized."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps if fps > 0 else 10.0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self.frames = 0

    def write(self, frame: np.ndarray, record: dict[str, Any]) -> None:
        """Append the annotated frame."""
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self._writer is None:
            self._open(frame)
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size)
        self._writer.write(draw(frame, record))
        self.frames += 1

    def _open(self, frame: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = (frame.shape[1], frame.shape[0])
        fourcc = cv2.VideoWriter.fourcc(*"mp4v")
        self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
        if not self._writer.isOpened():
            raise OSError(f"cannot write video {self.path}")

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
