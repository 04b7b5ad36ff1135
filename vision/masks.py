"""Binary mask encodings: 0/255 greyscale PNG and row-major run lengths."""

from __future__ import annotations

import cv2
import numpy as np

from vision.errors import InvalidInputError


def encode_png(mask: np.ndarray) -> bytes:
    """An HxW mask (bool or nonzero = on) as an 8-bit greyscale PNG of 0 and 255."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {list(mask.shape)}")
    grey = np.where(mask != 0, np.uint8(255), np.uint8(0))
    ok, buffer = cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """An HxW bool mask from a greyscale PNG (on where the value is above half range)."""
    if not data:
        raise InvalidInputError("empty mask PNG")
    grey = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    if grey is None:
        raise InvalidInputError("mask PNG could not be decoded; send a valid PNG")
    if grey.ndim == 3:
        grey = grey[:, :, 0]
    half = 127 if grey.dtype == np.uint8 else int(np.iinfo(grey.dtype).max) // 2
    return grey > half


def encode_rle(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of an HxW mask, alternating off/on, starting with off (maybe 0)."""
    flat = np.asarray(mask).reshape(-1)
    if flat.dtype != bool:
        flat = flat != 0
    if flat.size == 0:
        return [0]
    bounds = np.concatenate(([0], *_changes(flat), [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


class RunLengths:
    """`encode_rle` of a mask given as consecutive pieces of its row-major order (a volume's
    slices as they become final): `counts()` is what `encode_rle` gives for the whole."""

    def __init__(self) -> None:
        """Nothing added yet (`counts()` is then `[0]`, as for an empty mask)."""
        self._bounds: list[np.ndarray] = [np.zeros(1, np.int64)]
        self._size = 0
        self._last = False  # a mask starts "off"

    @property
    def size(self) -> int:
        """Elements added so far."""
        return self._size

    def add(self, piece: np.ndarray) -> None:
        """The next elements (bool, or nonzero = on), in row-major order."""
        flat = np.asarray(piece).reshape(-1)
        if flat.dtype != bool:
            flat = flat != 0
        if flat.size == 0:
            return
        if bool(flat[0]) != self._last:  # a run ends where this piece begins
            self._bounds.append(np.array([self._size], np.int64))
        self._bounds.extend(index + self._size for index in _changes(flat))
        self._size += flat.size
        self._last = bool(flat[-1])

    def counts(self) -> list[int]:
        """The run lengths of everything added, alternating off/on, starting with off."""
        if self._size == 0:
            return [0]
        bounds = np.concatenate([*self._bounds, np.array([self._size], np.int64)])
        return np.diff(bounds).tolist()


_RLE_CHUNK = 1 << 20


def _changes(flat: np.ndarray) -> list[np.ndarray]:
    """The indices i where flat[i] != flat[i - 1], a chunk at a time (temporaries stay small:
    a whole volume's mask is tens of MB)."""
    found = []
    for start in range(0, flat.size - 1, _RLE_CHUNK):
        stop = min(start + _RLE_CHUNK, flat.size - 1)
        index = np.flatnonzero(flat[start + 1 : stop + 1] != flat[start:stop])
        if len(index):
            found.append(index + (start + 1))
    return found


def decode_rle(counts: list[int], height: int, width: int) -> np.ndarray:
    """The HxW bool mask that `encode_rle` produced `counts` from."""
    runs = np.asarray(list(counts), dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise InvalidInputError("RLE counts must be non-negative integers")
    if int(runs.sum()) != height * width:
        raise InvalidInputError(
            f"RLE counts sum to {int(runs.sum())}, but a {height}x{width} mask has "
            f"{height * width} pixels"
        )
    values = np.arange(runs.size) % 2 == 1
    return np.repeat(values, runs).reshape(height, width)
