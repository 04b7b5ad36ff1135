"""KServe tensors a client can send that must be refused before any work (both transports)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.http.codec import MAX_TIMEOUT_US, decode_request
from serving.tensors import (
    MAX_DIMENSION,
    check_batch_rows,
    tensor_from_bytes,
    tensor_from_values,
)
from vision.errors import InvalidInputError


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ([2**32, 2**32, 1], "over"),  # 2**64: np.prod wraps to 0 and passed the length check
        ([2**63 - 1, 0], "over"),
        ([-1, 3], "negative dimension"),
    ],
)
def test_shapes_that_overflow_or_are_negative(shape: list[int], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        tensor_from_bytes("images", "FP32", shape, b"")
    with pytest.raises(InvalidInputError, match=match):
        tensor_from_values("images", "FP32", shape, [])


def test_byte_count_must_match_shape_and_datatype() -> None:
    with pytest.raises(InvalidInputError, match="5 bytes given; shape \\[1, 3\\] of FP32 needs 12"):
        tensor_from_bytes("images", "FP32", [1, 3], bytes(5))
    assert tensor_from_bytes("images", "FP32", [0, MAX_DIMENSION], b"").shape == (0, MAX_DIMENSION)


@pytest.mark.parametrize("values", [[300], [-1], [2**70], [float("nan")], ["x"], [None]])
def test_values_outside_the_datatype(values: list) -> None:
    with pytest.raises(InvalidInputError, match="values are not UINT8"):
        tensor_from_values("images", "UINT8", [1], values)


def test_batch_over_max_batch_size_zero_rows_and_disagreeing_rows() -> None:
    feeds = {"images": np.zeros((9, 3), np.float32)}
    with pytest.raises(InvalidInputError, match="batch of 9 rows; this model takes at most 8"):
        check_batch_rows(feeds, 8)
    assert check_batch_rows(feeds, 9) == 9
    with pytest.raises(InvalidInputError, match="at most 1"):
        check_batch_rows({"images": np.zeros((2, 3), np.float32)}, 0)  # 0: batching off
    with pytest.raises(InvalidInputError, match="leading batch dimension"):
        check_batch_rows({"images": np.zeros((0, 3), np.float32)}, 8)
    with pytest.raises(InvalidInputError, match="leading batch dimension"):
        check_batch_rows({"a": np.zeros((1, 3)), "b": np.zeros((2, 3))}, 8)
    with pytest.raises(InvalidInputError, match="no inputs"):
        check_batch_rows({}, 8)


def _body(**fields) -> bytes:
    spec = {"name": "images", "datatype": "FP32", "shape": [1], "data": [1.0]}
    return json.dumps({"inputs": [spec], **fields}).encode()


def test_rest_bodies_that_broke_the_parser() -> None:
    with pytest.raises(InvalidInputError, match="not a JSON object"):
        decode_request(b'{"inputs": [], "id": ' + b"9" * 5000 + b"}", None)
    deep = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": '
    deep += b"[" * 900 + b"1" + b"]" * 900 + b"}]}"
    assert decode_request(deep, None).feeds["x"].tolist() == [1.0]
    with pytest.raises(InvalidInputError, match="timeout"):
        decode_request(_body(parameters={"timeout": MAX_TIMEOUT_US + 1}), None)
    assert decode_request(_body(parameters={"timeout": 5}), None).timeout_us == 5
