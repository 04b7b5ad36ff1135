"""KServe v2 REST inference bodies: JSON tensors and Triton's binary tensor data extension.

A request body is a JSON object, optionally followed by the raw bytes of the inputs whose
`parameters.binary_data_size` is set, in input order; the `Inference-Header-Content-Length`
header then gives the JSON part's length. Outputs go back the same way when the request asks
for them binary (`binary_data` per output, else `binary_data_output` in its parameters).
Inputs and outputs may instead name a system shared-memory region (Triton's parameters
`shared_memory_region`, `shared_memory_byte_size`, `shared_memory_offset`); the route resolves
them (`serving/http/kserve_rest.py`, `serving/shared_memory.py`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

import numpy as np

from serving.shared_memory import (
    BYTE_SIZE_PARAMETER,
    OFFSET_PARAMETER,
    REGION_PARAMETER,
    TensorRef,
)
from serving.tensors import (
    datatype_of,
    tensor_from_bytes,
    tensor_from_values,
    to_little_endian_bytes,
)
from vision.errors import InvalidInputError

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class ShmInput:
    """An input whose bytes are in a shared-memory region."""

    datatype: str
    shape: list[int]
    ref: TensorRef


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: input tensors, and which outputs to return how."""

    id: str = ""
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, bool | None] = field(default_factory=dict)  # name -> binary; {}: all
    binary_default: bool = False
    timeout_us: int | None = None
    shm_inputs: dict[str, ShmInput] = field(default_factory=dict)
    shm_outputs: dict[str, TensorRef] = field(default_factory=dict)

    def selection(self, produced: dict[str, np.ndarray]) -> list[tuple[str, bool]]:
        """(output name, binary?) to return, in the request's order or the model's."""
        wanted = list(self.outputs) or list(produced)
        unknown = [name for name in wanted if name not in produced]
        if unknown:
            raise InvalidInputError(f"unknown output(s) {unknown}; the model has {list(produced)}")
        chosen = [self.outputs.get(name) for name in wanted]
        return [
            (name, self.binary_default if binary is None else binary)
            for name, binary in zip(wanted, chosen, strict=True)
        ]


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an infer body; InvalidInputError says what is wrong with it."""
    json_part, binary = _split(body, header_length)
    try:
        header = json.loads(json_part)
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        # ValueError: JSONDecodeError, and integers past Python's int conversion limit.
        hint = "" if header_length else f" (binary tensors need the {HEADER_LENGTH} header)"
        raise InvalidInputError(f"the request body is not a JSON object: {exc}{hint}") from exc
    header = _object(header, "the request body")
    parameters = _object(header.get("parameters", {}), "request parameters")
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError("request 'id' must be a string")
    feeds, shm_inputs = _inputs(_list(header.get("inputs"), "request 'inputs'"), binary)
    outputs, shm_outputs = _outputs(_list(header.get("outputs", []), "request 'outputs'"))
    return InferRequest(
        id=request_id,
        feeds=feeds,
        outputs=outputs,
        binary_default=_flag(parameters, "binary_data_output", "request parameters"),
        timeout_us=_timeout(parameters),
        shm_inputs=shm_inputs,
        shm_outputs=shm_outputs,
    )


def encode_response(
    model: str,
    version: str,
    request_id: str,
    outputs: dict[str, np.ndarray],
    selection: list[tuple[str, bool]],
    in_shared_memory: Collection[str] = (),
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary tensors follow it.

    Outputs in `in_shared_memory` were written to their regions: only their description goes.
    """
    entries, blobs = [], []
    for name, binary in selection:
        array = outputs[name]
        entry: dict[str, object] = {
            "name": name,
            "datatype": datatype_of(str(array.dtype)),
            "shape": list(array.shape),
        }
        if name in in_shared_memory:
            pass
        elif binary:
            raw = to_little_endian_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = np.asarray(array).ravel().tolist()
        entries.append(entry)
    header: dict[str, object] = {"model_name": model, "model_version": version}
    if request_id:
        header["id"] = request_id
    header["outputs"] = entries
    text = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(body):
        raise InvalidInputError(
            f"{HEADER_LENGTH} must be an integer in [1, {len(body)}] (the body's length); "
            f"got {header_length!r}"
        )
    return body[:length], memoryview(body)[length:]


def _inputs(specs: list, binary: memoryview) -> tuple[dict[str, np.ndarray], dict[str, ShmInput]]:
    feeds: dict[str, np.ndarray] = {}
    shm: dict[str, ShmInput] = {}
    offset = 0
    for spec in specs:
        name, datatype, shape, parameters = _tensor_spec(spec)
        if name in feeds or name in shm:
            raise InvalidInputError(f"input {name!r} is given twice")
        ref = shm_ref(name, parameters)
        if ref is not None:
            if "data" in spec or "binary_data_size" in parameters:
                raise InvalidInputError(
                    f"input {name!r}: give its data in shared memory, 'data' or binary, one only"
                )
            shm[name] = ShmInput(datatype, shape, ref)
            continue
        size = parameters.get("binary_data_size")
        if size is None:
            if "data" not in spec:
                raise InvalidInputError(f"input {name!r}: give 'data' or binary_data_size")
            feeds[name] = tensor_from_values(name, datatype, shape, list(_flat(spec["data"])))
            continue
        if "data" in spec:
            raise InvalidInputError(f"input {name!r}: give 'data' or binary_data_size, not both")
        if not _is_int(size) or size < 0 or offset + size > len(binary):
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size!r} does not fit the "
                f"{len(binary) - offset} binary bytes left in the body"
            )
        feeds[name] = tensor_from_bytes(name, datatype, shape, binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise InvalidInputError(
            f"{len(binary) - offset} bytes after the inputs' binary data; "
            "binary_data_size must account for every byte"
        )
    return feeds, shm


def shm_ref(name: str, parameters: dict) -> TensorRef | None:
    """The shared-memory reference in a tensor's JSON parameters, or None."""
    region = parameters.get(REGION_PARAMETER)
    if region is None:
        return None
    size, offset = parameters.get(BYTE_SIZE_PARAMETER), parameters.get(OFFSET_PARAMETER, 0)
    if not isinstance(region, str) or not _is_int(size) or not _is_int(offset):
        raise InvalidInputError(
            f"tensor {name!r}: {REGION_PARAMETER} must be a string, {BYTE_SIZE_PARAMETER} "
            f"and {OFFSET_PARAMETER} integers"
        )
    return TensorRef(region, offset, size)


def _tensor_spec(spec: object) -> tuple[str, str, list[int], dict]:
    spec = _object(spec, "each input")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("every input needs a 'name' (string)")
    if not isinstance(datatype, str):
        raise InvalidInputError(f"input {name!r}: 'datatype' must be a string such as \"FP32\"")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise InvalidInputError(f"input {name!r}: 'shape' must be a list of integers")
    parameters = _object(spec.get("parameters", {}), f"input {name!r} parameters")
    return name, datatype, shape, parameters


def _outputs(specs: list) -> tuple[dict[str, bool | None], dict[str, TensorRef]]:
    outputs: dict[str, bool | None] = {}
    shm: dict[str, TensorRef] = {}
    for spec in specs:
        spec = _object(spec, "each requested output")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInputError("every requested output needs a 'name' (string)")
        parameters = _object(spec.get("parameters", {}), f"output {name!r} parameters")
        if "classification" in parameters:
            raise InvalidInputError("the classification extension is not supported")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInputError(f"output {name!r}: binary_data must be true or false")
        outputs[name] = binary
        ref = shm_ref(name, parameters)
        if ref is not None:
            shm[name] = ref
    return outputs, shm


# Ten days, in microseconds: any longer "timeout" is a mistake (and would overflow a float).
MAX_TIMEOUT_US = 10 * 24 * 3600 * 1_000_000


def _timeout(parameters: dict) -> int | None:
    timeout = parameters.get("timeout")
    if timeout is None:
        return None
    if not _is_int(timeout) or not 0 <= timeout <= MAX_TIMEOUT_US:
        raise InvalidInputError(
            f"request parameter 'timeout' must be microseconds, an integer in [0, {MAX_TIMEOUT_US}]"
        )
    return timeout or None


def _flag(parameters: dict, key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where}: {key} must be true or false")
    return value


def _flat(values: object) -> Iterator[object]:
    """Row-major values of a flat or nested JSON list (iterative: any depth JSON allows)."""
    if not isinstance(values, list):
        raise InvalidInputError("tensor 'data' must be a (flat or nested) JSON list")
    stack = [iter(values)]
    while stack:
        value = next(stack[-1], _END)
        if value is _END:
            stack.pop()
        elif isinstance(value, list):
            stack.append(iter(value))
        else:
            yield value


_END = object()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: object, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return value


def _list(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise InvalidInputError(f"{what} must be a JSON list")
    return value
