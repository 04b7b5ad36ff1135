"""KServe v2 tensors in numpy: datatype names, and arrays from raw bytes or typed values.

Shared by the gRPC (`serving/rpc/kserve_servicer.py`) and REST (`serving/http/`) faces of the
Open Inference Protocol, so both accept and refuse exactly the same tensors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from vision.errors import InvalidInputError

DATATYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_NUMPY_TO_DATATYPE = {np.dtype(v).name: k for k, v in DATATYPES.items()}


def datatype_of(dtype: str) -> str:
    """KServe datatype name of a numpy dtype name ("BYTES" for anything else)."""
    return _NUMPY_TO_DATATYPE.get(np.dtype(dtype).name, "BYTES")


def _dtype(name: str, datatype: str) -> np.dtype:
    if datatype not in DATATYPES:
        raise InvalidInputError(
            f"input {name!r}: datatype {datatype!r} not supported; use one of {sorted(DATATYPES)}"
        )
    return np.dtype(DATATYPES[datatype]).newbyteorder("<")


# Larger than any tensor a request can carry (64 MiB messages): refused before numpy sees it,
# whose reshape would fail on a dimension over 2**63 with an error that is not the client's.
MAX_DIMENSION = 2**31 - 1


def _count(name: str, shape: Sequence[int]) -> tuple[tuple[int, ...], int]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidInputError(f"input {name!r}: negative dimension in shape {list(dims)}")
    if any(d > MAX_DIMENSION for d in dims):
        raise InvalidInputError(
            f"input {name!r}: a dimension of shape {list(dims)} is over {MAX_DIMENSION}"
        )
    count = 1
    for d in dims:
        count *= d  # Python ints: a huge shape cannot wrap around as np.prod would
    return dims, count


def check_batch_rows(feeds: dict[str, np.ndarray], max_batch_size: int) -> int:
    """The request's batch size (the inputs' common leading dimension), checked.

    InvalidInputError when there is no input, when the inputs disagree on the leading
    dimension or it is 0, and when it exceeds the model's `max_batch_size` (0 or 1: one row
    at most), so a request the batcher could not split never reaches it.
    """
    if not feeds:
        raise InvalidInputError("the request has no inputs")
    rows = {v.shape[0] if v.ndim else 0 for v in feeds.values()}
    if len(rows) != 1 or 0 in rows:
        raise InvalidInputError("every input needs the same leading batch dimension (>= 1)")
    (batch,) = rows
    limit = max(1, max_batch_size)
    if batch > limit:
        raise InvalidInputError(
            f"batch of {batch} rows; this model takes at most {limit} (max_batch_size): "
            "split the request"
        )
    return batch


def tensor_from_bytes(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """A zero-copy little-endian view of `raw` as a tensor; InvalidInputError on a size mismatch."""
    dtype = _dtype(name, datatype)
    dims, count = _count(name, shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r}: {len(raw)} bytes given; shape {list(dims)} of {datatype} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def tensor_from_values(
    name: str, datatype: str, shape: Sequence[int], values: Sequence[object]
) -> np.ndarray:
    """A tensor from a flat list of typed values (KServe `contents`, JSON `data`)."""
    dtype = _dtype(name, datatype)
    dims, count = _count(name, shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input {name!r}: {len(values)} values given; shape {list(dims)} needs {count}"
        )
    try:
        array = np.asarray(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"input {name!r}: values are not {datatype}: {exc}") from exc
    if array.shape != (count,):
        raise InvalidInputError(f"input {name!r}: give the values as one flat list of {count}")
    return array.reshape(dims)


def to_little_endian_bytes(array: np.ndarray) -> bytes:
    """The array's bytes in C order, little-endian (the wire order of KServe raw tensors)."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()
