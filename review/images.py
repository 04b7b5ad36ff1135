"""Case images on disk: raw pixels (`.npy`), 8-bit PNG renderings, masks and heat maps.

Each case has a folder `cases/<id>/` under the review data dir: `pixels.npy` (frames x H x W
[x C], the dtype as stored: uint8, uint16 or int16), `image.png` (frame 0 as 8-bit), the gzip
form of each frame sent so far (`pixels-<frame>.gz`, frame 0 made with the case), and PNGs
for masks (`mask-<origin>-<label index>.png`, 0/255) and heat maps (`heat-<finding id>.png`).
DICOM uploads also keep `source.dcm` for DICOM SEG export.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from vision.errors import InvalidInputError


def png_bytes(array: np.ndarray) -> bytes:
    """`array` (H x W or H x W x 3, uint8) as PNG bytes."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def read_png(data: bytes) -> np.ndarray:
    """The pixels of PNG bytes (greyscale or RGB as stored); InvalidInputError if not a PNG."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise InvalidInputError(f"expected a PNG, got {image.format}")
            return np.asarray(image)
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"not a readable PNG: {error}") from None


def to_uint8(frame: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """An 8-bit rendering of one frame: a window (center, width) or min-max for >8-bit data."""
    if frame.dtype == np.uint8:
        return frame
    values = frame.astype(np.float64)
    if frame.dtype == np.float32 or frame.dtype == np.float64:
        return np.clip(values, 0, 255).round().astype(np.uint8)
    if window is not None and window[1] > 0:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(frame.shape, np.uint8)
    return np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


def render_png(frame: np.ndarray, window: tuple[float, float] | None, invert: bool) -> bytes:
    """The 8-bit PNG the page and exports show for a frame (MONOCHROME1: `invert`)."""
    shown = to_uint8(frame, window)
    return png_bytes(squeeze_channels(255 - shown if invert else shown))


def mask_png(mask: np.ndarray) -> bytes:
    """A boolean mask as an 8-bit 0/255 PNG."""
    return png_bytes(np.where(mask, 255, 0).astype(np.uint8))


def heat_png(heat: np.ndarray) -> bytes:
    """A [0, 1] heat map as an 8-bit grey PNG."""
    return png_bytes(np.clip(heat * 255.0, 0, 255).round().astype(np.uint8))


def squeeze_channels(frame: np.ndarray) -> np.ndarray:
    """H x W for one-channel frames, H x W x 3 for colour (PIL's shapes)."""
    return frame[..., 0] if frame.ndim == 3 and frame.shape[-1] == 1 else frame


class CaseFiles:
    """The folder of one case."""

    def __init__(self, root: Path, case_id: int) -> None:
        self.folder = Path(root) / "cases" / str(case_id)

    def path(self, name: str) -> Path:
        """A file of the case folder by name."""
        return self.folder / name

    def write(self, name: str, data: bytes) -> None:
        """Write a file of the case (folder made on demand), atomically by rename."""
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = self.folder / f".{name}.tmp"
        temp.write_bytes(data)
        temp.replace(self.folder / name)

    def write_pixels(self, frames: np.ndarray) -> None:
        """Store the raw frames (F x H x W [x C])."""
        self.folder.mkdir(parents=True, exist_ok=True)
        np.save(self.folder / "pixels.npy", np.ascontiguousarray(frames), allow_pickle=False)

    def pixels(self) -> np.ndarray:
        """The raw frames, memory-mapped (F x H x W [x C])."""
        return np.load(self.folder / "pixels.npy", mmap_mode="r", allow_pickle=False)

    def frame_bytes(self, frame: int) -> bytes:
        """One frame's raw little-endian samples."""
        data = self.pixels()[frame]
        return data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes()

    def gzip_frame(self, frame: int) -> bytes:
        """One frame's samples gzip-compressed, made once and kept as `pixels-<frame>.gz`."""
        name = f"pixels-{frame}.gz"
        cached = self.read(name)
        if cached is None:
            cached = gzip.compress(self.frame_bytes(frame), compresslevel=6, mtime=0)
            self.write(name, cached)
        return cached

    def read(self, name: str) -> bytes | None:
        """A file's bytes, or None when the case has no such file."""
        path = self.folder / name
        return path.read_bytes() if path.is_file() else None
