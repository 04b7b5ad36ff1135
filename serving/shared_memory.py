"""Triton's system shared-memory extension: regions of /dev/shm that tensors name by reference.

A same-host client creates a POSIX shared-memory object (``shm_open``, e.g. with
``tritonclient.utils.shared_memory``), registers a region of it under a name, and then names
that region, an offset inside it and a byte size instead of sending a tensor's bytes: inputs are
read from the mapping without a copy (``np.frombuffer``) and outputs are written into it once.

Transport-free: the KServe servicer (`serving/rpc/kserve_servicer.py`) turns its messages into
these calls; errors are domain errors (`InvalidInputError` becomes INVALID_ARGUMENT). A region
stays mapped while a request that uses it is in flight: unregistering it, or the server stopping,
unmaps it once the last such request is done.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision.errors import InvalidInputError

log = logging.getLogger(__name__)

SHM_ROOT = Path("/dev/shm")
REGION_PARAMETER = "shared_memory_region"
OFFSET_PARAMETER = "shared_memory_offset"
BYTE_SIZE_PARAMETER = "shared_memory_byte_size"
# A POSIX shm name: one path component (an optional leading "/", as shm_open takes it).
_KEY = re.compile(r"/?[A-Za-z0-9_.\-]{1,255}")


@dataclass(frozen=True)
class RegionStatus:
    """One registered region, as SystemSharedMemoryStatus reports it."""

    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor's place in shared memory: region name, offset inside the region, byte size."""

    region: str
    offset: int
    byte_size: int


@dataclass(eq=False)
class _Region:
    status: RegionStatus
    mapping: mmap.mmap
    view: memoryview  # exactly the registered bytes
    leases: int = 0
    retired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def release(self) -> None:
        """Unmap once nobody holds a view any more (BufferError: a numpy array still does)."""
        with contextlib.suppress(BufferError):
            self.view.release()
        with contextlib.suppress(BufferError):  # else unmapped when the last view is freed
            self.mapping.close()


def shm_path(key: str) -> Path:
    """The file under /dev/shm behind a POSIX shared-memory key; InvalidInputError if unsafe."""
    if not _KEY.fullmatch(key) or key.lstrip("/") in (".", ".."):
        raise InvalidInputError(
            f"shared-memory key {key!r} is not a POSIX shm name; give one path component such "
            "as '/input0' (letters, digits, '_', '-', '.')"
        )
    return SHM_ROOT / key.lstrip("/")


def _map(key: str, offset: int, byte_size: int) -> tuple[mmap.mmap, memoryview]:
    """Map [offset, offset + byte_size) of the shm object `key`, read-write."""
    path = shm_path(key)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInputError(
            f"unable to open shared-memory key {key!r} ({exc.strerror}); create it first "
            "(shm_open / tritonclient.utils.shared_memory.create_shared_memory_region)"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(f"shared-memory key {key!r} is not a shared-memory object")
        if offset + byte_size > info.st_size:
            raise InvalidInputError(
                f"shared-memory key {key!r} holds {info.st_size} bytes; offset {offset} + "
                f"byte_size {byte_size} goes past its end"
            )
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(fd, byte_size + offset - start, offset=start)
    finally:
        os.close(fd)
    return mapping, memoryview(mapping)[offset - start : offset - start + byte_size]


class SharedMemoryRegistry:
    """The registered system shared-memory regions of one server process (thread-safe)."""

    def __init__(self) -> None:
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map a region of the shm object `key` under `name`."""
        if not name:
            raise InvalidInputError("give the shared-memory region a name")
        if byte_size <= 0:
            raise InvalidInputError(f"shared-memory region {name!r}: byte_size must be > 0")
        with self._lock:
            if name in self._regions:
                raise InvalidInputError(
                    f"shared-memory region {name!r} is already registered; unregister it first"
                )
            mapping, view = _map(key, offset, byte_size)
            self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size), mapping, view)
        log.info("registered shared-memory region %r (%d bytes)", name, byte_size)

    def status(self, name: str = "") -> list[RegionStatus]:
        """Every region (name empty) or the one named; InvalidInputError if it is unknown."""
        with self._lock:
            if not name:
                return [r.status for r in self._regions.values()]
            return [self._get(name).status]

    def unregister(self, name: str = "") -> None:
        """Forget one region (name empty: all); unknown names are ignored, as Triton does."""
        with self._lock:
            names = [name] if name else list(self._regions)
            regions = [self._regions.pop(n) for n in names if n in self._regions]
        for region in regions:
            with region.lock:
                region.retired = True
                if region.leases == 0:
                    region.release()

    def close(self) -> None:
        """Unregister everything (server shutdown)."""
        self.unregister("")

    @contextlib.contextmanager
    def lease(self, ref: TensorRef) -> Iterator[memoryview]:
        """The bytes `ref` names, kept mapped until the block ends; INVALID_ARGUMENT if bad."""
        with self._lock:
            region = self._get(ref.region)
            view = _slice(region, ref)
            with region.lock:
                region.leases += 1
        try:
            yield view
        finally:
            with contextlib.suppress(BufferError):  # an array made from it still lives
                view.release()
            with region.lock:
                region.leases -= 1
                if region.retired and region.leases == 0:
                    region.release()

    def _get(self, name: str) -> _Region:
        region = self._regions.get(name)
        if region is None:
            raise InvalidInputError(
                f"unknown shared-memory region {name!r}; register it first "
                f"(registered: {sorted(self._regions)})"
            )
        return region


def _slice(region: _Region, ref: TensorRef) -> memoryview:
    size = region.status.byte_size
    if ref.offset < 0 or ref.offset >= size:
        raise InvalidInputError(
            f"shared-memory region {ref.region!r}: offset {ref.offset} is past its end "
            f"({size} bytes)"
        )
    if ref.byte_size < 0 or ref.offset + ref.byte_size > size:
        raise InvalidInputError(
            f"shared-memory region {ref.region!r}: offset {ref.offset} + byte_size "
            f"{ref.byte_size} is past its end ({size} bytes)"
        )
    return region.view[ref.offset : ref.offset + ref.byte_size]


def write_to_region(
    name: str, array: np.ndarray, ref: TensorRef, shm: SharedMemoryRegistry
) -> None:
    """Copy one output into the shared-memory region its request named (the only copy)."""
    with shm.lease(ref) as view:
        if ref.byte_size < array.nbytes:
            raise InvalidInputError(
                f"output {name!r}: shared-memory byte_size {ref.byte_size} is smaller than "
                f"the {array.nbytes} bytes the output holds"
            )
        target = np.frombuffer(view, dtype=little_endian(array.dtype), count=array.size)
        target[...] = array.reshape(-1)
        del target


def little_endian(dtype: np.dtype) -> np.dtype:
    """`dtype` in little-endian byte order (the KServe wire order)."""
    return dtype.newbyteorder("<") if dtype.byteorder != "|" else dtype
