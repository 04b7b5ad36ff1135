"""Image pixels for dataset readers, decoded by the server's decoder (`vision.io.read_image`).

Labels and masks are not images: readers keep reading those as stored (PIL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vision.io import read_image, to_uint8
from vision.preprocess import convert_channels


def load_image(path: Path | str, channels: int) -> np.ndarray:
    """HxWxC uint8 (C = 1 grey or 3 RGB), decoded and channel-converted as the server does."""
    pixels = convert_channels(read_image(path), "GRAY" if channels == 1 else "RGB")
    return np.ascontiguousarray(to_uint8(pixels))


def load_grey(path: Path | str) -> np.ndarray:
    """HxW uint8 grey pixels (file metadata is never read)."""
    return load_image(path, 1)[..., 0]
