"""Hypothesis strategies for structure-aware fuzzing of the decoders and the three APIs.

Inputs are valid encodings, then broken the way careless clients and attackers break them:
truncated, bit-flipped, spliced, their header sizes overwritten with huge or zero values;
DICOM objects written element by element with absurd, malformed, multi-valued and wrong-VR
pixel-module attributes, NaN rescale and window values, syntaxes that are no syntax; KServe
tensors with shapes that overflow, wrong byte counts and out-of-range contents; REST bodies
with every field of the wrong type. A case is (api, payload bytes, model, headers), as
`tests.fuzz.targets.Clients.send` takes it.
"""

from __future__ import annotations

import gzip
import json
import struct

import cv2
import numpy as np
from hypothesis import strategies as st

from protos.inference import grpc_service_pb2 as kpb
from protos.vision.v1 import vision_pb2 as pb
from tests.fuzz.dicom_bytes import (
    DEFLATED,
    EXPLICIT_LE,
    JPEG_BASELINE,
    PHI,
    RLE,
    encapsulated,
    grey_elements,
    part10,
    us,
)

Case = tuple[str, bytes, str, dict]
MODELS = ("bright", "bright-scored", "boxes", "bright-x", "boxes-x", "no-such-model", "")
SIZES = (0, 1, 2, 7, 255, 4096, 30000, 65535, 2**31 - 1, 2**32 - 1)
DIMS = (-1, 0, 1, 2, 3, 4, 8, 9, 64, 2**31, 2**32, 2**62, 2**63 - 1)
DATATYPES = ("FP32", "FP16", "FP64", "UINT8", "INT8", "INT32", "INT64", "UINT64", "BOOL")
DATATYPES += ("BYTES", "FP8", "", "JUNK")


def _pixels(seed: int, h: int, w: int, channels: int, dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, top, shape, dtype=dtype, endpoint=True)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` unchanged, truncated, flipped, spliced, a header field overwritten, or extended."""
    kind = draw(st.sampled_from(("none", "truncate", "flip", "splice", "header", "append")))
    if not data or kind == "none":
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        flips = draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8))
        out = bytearray(data)
        for i in flips:
            out[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "splice":
        return data[:at] + draw(st.binary(max_size=64)) + data[at:]
    if kind == "header":
        at = draw(st.integers(0, min(len(data), 400) - 1))
        value = draw(st.sampled_from(SIZES))
        field = struct.pack(draw(st.sampled_from((">I", "<I", ">H", "<H"))), value & 0xFFFF)
        if value > 0xFFFF:
            field = struct.pack(draw(st.sampled_from((">I", "<I"))), value)
        return data[:at] + field + data[at + len(field) :]
    return data + draw(st.binary(max_size=256))


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """PNG, JPEG, TIFF or BMP bytes of a small random image, possibly broken."""
    fmt = draw(st.sampled_from((".png", ".jpg", ".tif", ".bmp")))
    channels = draw(st.sampled_from((1, 3, 4) if fmt != ".jpg" else (1, 3)))
    dtype = np.uint16 if fmt in (".png", ".tif") and draw(st.booleans()) else np.uint8
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    pixels = _pixels(draw(st.integers(0, 2**32 - 1)), h, w, channels, dtype)
    ok, buffer = cv2.imencode(fmt, pixels)
    assert ok
    return draw(mutated(buffer.tobytes()))


def _text(value: str, vr: str = "DS") -> tuple[str, str]:
    return vr, value


_NUMBERS = ("1", "2.5", "-1024", "0", "NaN", "inf", "-inf", "1e999", "abc", PHI, "", "1\\2")
_US_CHOICES = (0, 1, 2, 3, 4, 7, 8, 12, 16, 32, 64, 200, 65535)


@st.composite
def _us_element(draw: st.DrawFn) -> tuple[str, bytes | str]:
    kind = draw(st.sampled_from(("one", "one", "one", "two", "empty", "vr", "odd")))
    value = draw(st.sampled_from(_US_CHOICES))
    if kind == "two":
        return "US", us(value, value)
    if kind == "empty":
        return "US", b""
    if kind == "vr":
        return draw(st.sampled_from(("ZZ", "IS", "UN", "SS", "LO"))), us(value)
    if kind == "odd":
        return "US", b"\x01"
    return "US", us(value)


_PIXEL_MODULE = {
    "Rows": (0x0028, 0x0010),
    "Columns": (0x0028, 0x0011),
    "SamplesPerPixel": (0x0028, 0x0002),
    "BitsAllocated": (0x0028, 0x0100),
    "BitsStored": (0x0028, 0x0101),
    "HighBit": (0x0028, 0x0102),
    "PixelRepresentation": (0x0028, 0x0103),
    "PlanarConfiguration": (0x0028, 0x0006),
}
_DECIMALS = {
    "RescaleIntercept": (0x0028, 0x1052),
    "RescaleSlope": (0x0028, 0x1053),
    "WindowCenter": (0x0028, 0x1050),
    "WindowWidth": (0x0028, 0x1051),
}
_PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1", "RGB", "YBR_FULL", "PALETTE COLOR", PHI, "")
_SYNTAXES = (EXPLICIT_LE, EXPLICIT_LE, DEFLATED, RLE, JPEG_BASELINE, "1.2.3.4", PHI)


def _modality_lut(draw: st.DrawFn) -> bytes:
    count = draw(st.sampled_from((0, 1, 4, 256, 65535)))
    entries = draw(st.integers(0, 300))
    bits = draw(st.sampled_from((8, 12, 16, 0, 40)))
    descriptor = us(count & 0xFFFF, 0, bits)[: draw(st.sampled_from((6, 6, 4)))]
    item = struct.pack("<HH2sH", 0x0028, 0x3002, b"US", len(descriptor)) + descriptor
    data = us(*([7] * entries)) if entries else b""
    item += struct.pack("<HH2sHI", 0x0028, 0x3006, b"OW", 0, len(data)) + data
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item


@st.composite
def dicom_files(draw: st.DrawFn) -> bytes:
    """A DICOM object with fuzzed pixel-module, rescale and window elements, possibly broken."""
    rows, columns = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    syntax = draw(st.sampled_from(_SYNTAXES))
    elements = grey_elements(rows, columns)
    for tag in _PIXEL_MODULE.values():
        choice = draw(st.sampled_from(("keep", "keep", "keep", "fuzz", "drop")))
        if choice == "fuzz":
            elements[tag] = draw(_us_element())
        elif choice == "drop":
            elements.pop(tag, None)
    for tag in _DECIMALS.values():
        if draw(st.booleans()):
            elements[tag] = _text(
                draw(st.sampled_from(_NUMBERS)), draw(st.sampled_from(("DS",) * 4 + ("LO",)))
            )
    if draw(st.booleans()):
        elements[(0x0028, 0x0008)] = ("IS", draw(st.sampled_from(_NUMBERS + ("2147483647",))))
    elements[(0x0028, 0x0004)] = ("CS", draw(st.sampled_from(_PHOTOMETRIC)))
    if draw(st.integers(0, 9)) == 0:
        elements[(0x0028, 0x3000)] = ("SQ", _modality_lut(draw))
    if draw(st.integers(0, 9)) == 0:
        elements[(0x0028, 0x1056)] = ("CS", draw(st.sampled_from(("SIGMOID", "LINEAR_EXACT", PHI))))
    elements[(0x7FE0, 0x0010)] = ("OB", _pixel_data(draw, syntax, rows, columns))
    return draw(mutated(part10(elements, syntax)))


def _pixel_data(draw: st.DrawFn, syntax: str, rows: int, columns: int) -> bytes:
    size = draw(st.sampled_from((rows * columns, rows * columns * 2, 0, 1, rows * columns - 1)))
    if syntax == JPEG_BASELINE:
        frame = cv2.imencode(".jpg", np.zeros((rows, columns), np.uint8))[1].tobytes()
        return encapsulated([draw(mutated(frame))])
    if syntax == RLE:
        return encapsulated([draw(st.binary(max_size=200))])
    return draw(st.binary(min_size=max(0, size), max_size=max(0, size)))


def _raw_image(draw: st.DrawFn) -> pb.ImageInput:
    shape = draw(st.lists(st.sampled_from(DIMS[:-3] + (3, 16)), max_size=4))
    dtype = draw(st.sampled_from((0, 1, 2, 3, 4, 99)))
    itemsize = {1: 1, 2: 2, 3: 4}.get(dtype, 1)
    count = int(np.prod(shape, dtype=object)) if shape else 0
    exact = 0 < count * itemsize <= 1 << 20 and draw(st.booleans())
    data = bytes(count * itemsize) if exact else draw(st.binary(max_size=512))
    return pb.ImageInput(raw=pb.RawImage(data=data, shape=shape, dtype=dtype))


_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.just(0.5))


_SERVES = {"detect": ("boxes", "boxes-x"), "segment": ("bright", "bright-scored", "bright-x")}
_SERVES["explain"] = ("bright-x", "boxes-x")


@st.composite
def valid_images(draw: st.DrawFn) -> bytes:
    """A small image every model serves: PNG, JPEG, TIFF, BMP or an 8/16-bit grey DICOM."""
    h, w = draw(st.integers(8, 48)), draw(st.integers(8, 48))
    seed = draw(st.integers(0, 2**32 - 1))
    fmt = draw(st.sampled_from((".png", ".jpg", ".tif", ".bmp", "dicom", "dicom16")))
    if fmt.startswith("dicom"):
        bits = 16 if fmt == "dicom16" else 8
        pixels = _pixels(seed, h, w, 1, np.uint16 if bits == 16 else np.uint8)
        elements = grey_elements(h, w, pixels.tobytes())
        for number in (0x0100, 0x0101):
            elements[(0x0028, number)] = ("US", bits)
        elements[(0x0028, 0x0102)] = ("US", bits - 1)
        return part10(elements)
    channels = draw(st.sampled_from((1, 3)))
    return cv2.imencode(fmt, _pixels(seed, h, w, channels, np.uint8))[1].tobytes()


@st.composite
def valid_vision_cases(draw: st.DrawFn) -> Case:
    """A request that must succeed: the right kind of model, an image it can take."""
    api = draw(st.sampled_from(("detect", "segment", "explain")))
    model = pb.ModelRef(name=draw(st.sampled_from(_SERVES[api])))
    image = pb.ImageInput(encoded=draw(valid_images()))
    kind = {"detect": pb.DetectRequest, "segment": pb.SegmentRequest}.get(api, pb.ExplainRequest)
    return api, kind(model=model, image=image).SerializeToString(), "", {}


@st.composite
def vision_cases(draw: st.DrawFn) -> Case:
    """A vision.v1 Detect, Segment or Explain request, serialised (or its bytes broken)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(valid_vision_cases())
    api = draw(st.sampled_from(("detect", "segment", "explain")))
    kind = draw(st.sampled_from(("encoded", "dicom", "raw", "none")))
    if kind == "encoded":
        image = pb.ImageInput(encoded=draw(encoded_images()))
    elif kind == "dicom":
        image = pb.ImageInput(encoded=draw(dicom_files()))
    else:
        image = _raw_image(draw) if kind == "raw" else pb.ImageInput()
    model = pb.ModelRef(
        name=draw(st.sampled_from(MODELS)), version=draw(st.sampled_from(("", "1", "7", "x")))
    )
    explain = pb.ExplainOptions(
        class_ids=draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3)),
        max_findings=draw(st.integers(-(2**31), 2**31 - 1)),
    )
    if api == "detect":
        request = pb.DetectRequest(model=model, image=image, include_overlay=draw(st.booleans()))
        for field in ("score_threshold", "iou_threshold"):
            if draw(st.booleans()):
                setattr(request, field, draw(_FLOATS))
    elif api == "segment":
        request = pb.SegmentRequest(model=model, image=image, mask_encoding=draw(st.integers(0, 3)))
    else:
        request = pb.ExplainRequest(model=model, image=image, class_ids=explain.class_ids)
        if draw(st.booleans()):
            request.score_threshold = draw(_FLOATS)
    if api != "explain" and draw(st.integers(0, 3)) == 0:
        request.explain.CopyFrom(explain)
    payload = request.SerializeToString()
    if draw(st.integers(0, 9)) == 0:
        payload = draw(mutated(payload))
    return api, payload, "", {}


def _tensor_shape(draw: st.DrawFn) -> list[int]:
    if draw(st.booleans()):
        return [draw(st.integers(1, 9)), 3, draw(st.integers(1, 8)), draw(st.integers(1, 8))]
    return draw(st.lists(st.sampled_from(DIMS), max_size=5))


def _contents(draw: st.DrawFn, tensor: kpb.ModelInferRequest.InferInputTensor) -> None:
    field = draw(
        st.sampled_from(("fp32_contents", "int_contents", "uint_contents", "int64_contents"))
    )
    bounds = {
        "int_contents": (-(2**31), 2**31 - 1),
        "uint_contents": (0, 2**32 - 1),
        "int64_contents": (-(2**63), 2**63 - 1),
    }
    if field == "fp32_contents":
        values = draw(st.lists(st.floats(width=32, allow_nan=True), max_size=64))
    else:
        values = draw(st.lists(st.integers(*bounds[field]), max_size=64))
    getattr(tensor.contents, field).extend(values)


@st.composite
def infer_cases(draw: st.DrawFn) -> Case:
    """A KServe ModelInferRequest: raw or typed contents, fuzzed shapes and datatypes."""
    request = kpb.ModelInferRequest(
        model_name=draw(st.sampled_from(MODELS)),
        model_version=draw(st.sampled_from(("", "1", "9"))),
    )
    if draw(st.integers(0, 3)) == 0:  # one that must succeed
        rows, h, w = draw(st.integers(1, 8)), draw(st.integers(1, 16)), draw(st.integers(1, 16))
        request = kpb.ModelInferRequest(model_name=draw(st.sampled_from(("bright", "bright-x"))))
        request.inputs.add(name="images", datatype="FP32", shape=[rows, 3, h, w])
        request.raw_input_contents.append(np.ones((rows, 3, h, w), "<f4").tobytes())
        return "infer", request.SerializeToString(), request.model_name, {}
    for _ in range(draw(st.integers(0, 2))):
        shape = _tensor_shape(draw)
        datatype = draw(st.sampled_from(("FP32",) * 6 + DATATYPES))
        name = draw(st.sampled_from(("images", "images", "other", "")))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if draw(st.booleans()) and 0 <= count * 4 <= 1 << 20:
            request.raw_input_contents.append(bytes(count * 4))
        elif draw(st.booleans()):
            request.raw_input_contents.append(draw(st.binary(max_size=256)))
        else:
            _contents(draw, tensor)
    for name in draw(
        st.lists(st.sampled_from(("logits", "brightness", "output0", "JUNK")), max_size=2)
    ):
        request.outputs.add(name=name)
    payload = request.SerializeToString()
    if draw(st.integers(0, 9)) == 0:
        payload = draw(mutated(payload))
    return "infer", payload, request.model_name, {}


_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_JSON = st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=4), max_leaves=24)


@st.composite
def rest_cases(draw: st.DrawFn) -> Case:
    """A v2 REST infer body: JSON with fuzzed fields, binary tensor data, compression."""
    if draw(st.integers(0, 3)) == 0:  # one that must succeed
        rows, h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
        spec = {"name": "images", "datatype": "FP32", "shape": [rows, 3, h, w]}
        body = {"inputs": [{**spec, "data": [0.25] * (rows * 3 * h * w)}]}
        return "rest", json.dumps(body).encode(), "bright", {"Content-Type": "application/json"}
    inputs = []
    binary = b""
    for _ in range(draw(st.integers(0, 2))):
        shape = _tensor_shape(draw)
        spec: dict = {"name": draw(st.sampled_from(("images", "other", "", 7))), "shape": shape}
        spec["datatype"] = draw(st.sampled_from(("FP32",) * 4 + DATATYPES + (None,)))
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if draw(st.booleans()) and 0 <= count <= 4096:
            spec["data"] = [0.5] * count
        elif draw(st.booleans()):
            spec["data"] = draw(_JSON)
        else:
            size = draw(
                st.sampled_from((count * 4 if 0 <= count * 4 <= 65536 else 0, -1, 3, 2**40))
            )
            spec["parameters"] = {"binary_data_size": size}
            binary += bytes(max(0, min(size, 65536)))
        if draw(st.integers(0, 5)) == 0:
            spec[draw(st.sampled_from(("shape", "parameters", "name")))] = draw(_JSON)
        inputs.append(spec)
    body: dict = {"inputs": inputs}
    if draw(st.booleans()):
        body["parameters"] = {
            draw(st.sampled_from(("timeout", "binary_data_output"))): draw(_JSON_LEAF)
        }
    if draw(st.integers(0, 4)) == 0:
        body[draw(st.sampled_from(("id", "outputs", "inputs")))] = draw(_JSON)
    head = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    payload = head + binary
    if binary or draw(st.integers(0, 5)) == 0:
        headers["Inference-Header-Content-Length"] = draw(
            st.sampled_from((str(len(head)), str(len(head)), "0", "-3", "abc", str(2**70)))
        )
    if draw(st.integers(0, 9)) == 0:
        payload = draw(mutated(payload))
    if draw(st.integers(0, 9)) == 0:
        encoding = draw(st.sampled_from(("gzip", "br", "gzip")))
        headers["Content-Encoding"] = encoding
        payload = gzip.compress(payload) if encoding == "gzip" else payload
    return "rest", payload, draw(st.sampled_from(MODELS[:3] + ("no-such-model",))), headers


def cases() -> st.SearchStrategy[Case]:
    """Any case for any of the three APIs."""
    return st.one_of(vision_cases(), infer_cases(), rest_cases())


def decoder_inputs() -> st.SearchStrategy[bytes]:
    """Bytes for `vision.io.decode_image`: images and DICOM objects, valid or broken."""
    return st.one_of(encoded_images(), dicom_files(), st.binary(max_size=300))
