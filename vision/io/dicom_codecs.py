"""Which pydicom decoding plugin decodes a compressed frame, and GDCM kept out of the process.

python-gdcm aborts the whole process on some corrupt JPEG frames (an uncaught C++
`gdcm::Exception` in gdcmJPEGBITSCodec: std::terminate), which for a server is a crash any
client can cause. Plugins are chosen in `PREFERENCE` order, GDCM last; a syntax that only GDCM
decodes here (JPEG Lossless without the GPL pylibjpeg-libjpeg) is decoded in a separate
process, one at a time, so a frame that kills GDCM kills that process only and is refused.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, iter_pixels

from vision.errors import InvalidInputError

log = logging.getLogger(__name__)

PREFERENCE = ("pylibjpeg", "pyjpegls", "pillow", "pydicom", "gdcm")
_ISOLATED = "gdcm"
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def plugin_for(syntax) -> str:
    """The decoding plugin to use for `syntax` ("" for native data: pydicom's own)."""
    if not syntax.is_compressed:
        return ""
    available = get_decoder(syntax).available_plugins
    return next((name for name in PREFERENCE if name in available), "")


def _decode_all(ds: Dataset, plugin: str) -> list[np.ndarray]:
    """In the isolated process: every frame of `ds` with `plugin`."""
    return list(iter_pixels(ds, decoding_plugin=plugin, allow_excess_frames=False))


def _isolated_pool() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _pool


def _isolated(ds: Dataset, plugin: str) -> list[np.ndarray]:
    global _pool
    with _lock:  # one at a time: a crash takes down only the frame that caused it
        try:
            return _isolated_pool().submit(_decode_all, ds, plugin).result()
        except BrokenProcessPool:
            _pool = None
            log.warning("the %s decoder process died on a frame; refused", plugin)
            raise InvalidInputError(
                "DICOM compressed pixel data crashed the decoder: the frame is corrupt"
            ) from None


def frames(ds: Dataset, syntax) -> Iterator[np.ndarray]:
    """The decoded frames of the (clean) data set `ds`, in order."""
    plugin = plugin_for(syntax)
    if plugin == _ISOLATED:
        yield from _isolated(ds, plugin)
        return
    yield from iter_pixels(ds, decoding_plugin=plugin, allow_excess_frames=False)
