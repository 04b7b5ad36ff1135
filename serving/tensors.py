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


def _count(name: str, shape: Sequence[int]) -> tuple[tuple[int, ...], int]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidInputError(f"input {name!r}: negative dimension in shape {list(dims)}")
    count = 1
    for d in dims:
        count *= d  # Python ints: a huge shape cannot wrap around as np.prod would
    return dims, count


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
