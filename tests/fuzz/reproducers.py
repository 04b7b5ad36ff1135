"""Every input that once broke the server (issue 18), built as small files for the corpus.

`python -m tests.fuzz.reproducers` (re)writes `tests/fuzz/corpus/`: one file per reproducer
and `manifest.json` with the API it goes to and the status it must get. The files are what is
kept; this module is how they were made. `tests/fuzz/test_corpus.py` replays them.

APIs: `image` (the bytes as `vision.v1` Segment's encoded image, and `vision.io.decode_image`
in-process), `detect` (a serialised DetectRequest), `infer` (a serialised KServe
ModelInferRequest), `rest` (a v2 REST infer body, with its headers).
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from protos.inference import grpc_service_pb2 as kpb
from protos.vision.v1 import vision_pb2 as pb
from tests.fuzz.dicom_bytes import (
    DEFLATED,
    JPEG_BASELINE,
    PHI,
    encapsulated,
    grey_dicom,
    grey_elements,
    part10,
    us,
)

CORPUS = Path(__file__).parent / "corpus"
MAX_PIXELS = 2_000_000  # the fuzz servers' --max-image-pixels
BAD = "INVALID_ARGUMENT"
BIG = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class Reproducer:
    """One input, where it goes, and the status it must get."""

    name: str
    api: str
    build: Callable[[], bytes]
    expected: tuple[str, ...]
    model: str = "bright"
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""


def _grey(**overrides) -> bytes:
    return grey_dicom(bytes(16), 4, 4, **overrides)


def _modality_lut_malformed() -> bytes:
    item = b"".join(
        [
            struct.pack("<HH2sH", 0x0028, 0x3002, b"US", 4) + us(256, 0),  # 2 of 3 values
            struct.pack("<HH2sHI", 0x0028, 0x3006, b"OW", 0, 4) + us(1, 2),
        ]
    )
    sequence = struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item
    return _grey(ModalityLUTSequence=("SQ", sequence))


def _deflate_bomb() -> bytes:
    """A deflated data set of about 70 KB whose pixel data inflates to 64 MiB."""
    elements = grey_elements(4, 4, bytes(64 * 1024 * 1024))
    return part10(elements, DEFLATED)


def _jpeg(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", pixels)
    assert ok
    return data.tobytes()


def _patch_sof(jpeg: bytes, width: int, height: int) -> bytes:
    at = jpeg.find(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def _jpeg_dicom(rows: int, columns: int, frame: bytes) -> bytes:
    elements = grey_elements(rows, columns, encapsulated([frame]))
    return part10(elements, JPEG_BASELINE)


def _png_bomb() -> bytes:
    png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    ihdr = struct.pack(">II", 30000, 30000) + png[24:29]
    return png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]


def _tiff(width: int, height: int, big: bool, samples: int = 1, bits: int = 8) -> bytes:
    """A deflate-compressed TIFF (or BigTIFF) whose one strip holds 1000 zero bytes."""
    strip = zlib.compress(bytes(1000))
    tags = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 8), (262, 3, 1)]
    tags += [(273, 16 if big else 4, 0), (277, 3, samples), (278, 4, height)]
    tags += [(279, 16 if big else 4, len(strip))]
    if big:
        head, entry, count, offset = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16), 20, "<Q", 16
    else:
        head, entry, count, offset = b"II*\x00" + struct.pack("<I", 8), 12, "<H", 8
    data_at = offset + struct.calcsize(count) + entry * len(tags) + (8 if big else 4)
    ifd = struct.pack(count, len(tags))
    for tag, kind, value in tags:
        value = data_at if tag == 273 else value
        ifd += struct.pack("<HHQQ" if big else "<HHII", tag, kind, 1, value)
    ifd += bytes(8 if big else 4)
    return head + ifd + strip


def _png_idat_4gib() -> bytes:
    """A 12x8 PNG whose IDAT length says 4 GiB (found by bench.fuzz: 18 s and 4 GB in OpenCV)."""
    png = cv2.imencode(".png", np.zeros((8, 12), np.uint8))[1].tobytes()
    at = png.find(b"IDAT") - 4
    return png[:at] + struct.pack(">I", 0xFFFFFF73) + png[at + 4 :]


def _tiff_strip_past_the_end() -> bytes:
    data = _tiff(40, 30, big=False)
    at = data.find(struct.pack("<HHII", 279, 4, 1, len(zlib.compress(bytes(1000)))))
    return data[: at + 8] + struct.pack("<I", 2**31) + data[at + 12 :]


def _bmp_bomb() -> bytes:
    bmp = cv2.imencode(".bmp", np.zeros((2, 2), np.uint8))[1].tobytes()
    return bmp[:18] + struct.pack("<ii", 30000, 30000) + bmp[26:]


def _infer(shape: list[int], datatype: str = "FP32", raw: bytes | None = b"", **contents) -> bytes:
    tensor = kpb.ModelInferRequest.InferInputTensor(name="images", datatype=datatype, shape=shape)
    for key, values in contents.items():
        getattr(tensor.contents, key).extend(values)
    request = kpb.ModelInferRequest(model_name="bright", inputs=[tensor])
    if raw is not None and not contents:
        request.raw_input_contents.append(raw)
    return request.SerializeToString()


def _rest(inputs: list[dict], parameters: dict | None = None, text: str | None = None) -> bytes:
    if text is not None:
        return text.encode()
    body: dict = {"inputs": inputs}
    if parameters:
        body["parameters"] = parameters
    return json.dumps(body).encode()


def _detect(**thresholds: float) -> bytes:
    png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    request = pb.DetectRequest(model=pb.ModelRef(name="boxes"), image=pb.ImageInput(encoded=png))
    for key, value in thresholds.items():
        setattr(request, key, value)
    return request.SerializeToString()


def _detect_image(pixels: np.ndarray) -> bytes:
    png = cv2.imencode(".png", pixels)[1].tobytes()
    return pb.DetectRequest(
        model=pb.ModelRef(name="boxes"), image=pb.ImageInput(encoded=png)
    ).SerializeToString()


def _deep(depth: int) -> str:
    return '{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": ' + (
        "[" * depth + "1" + "]" * depth + "}]}"
    )


# Found by a fuzz run: a JPEG baseline DICOM whose frame made python-gdcm abort the process
# (uncaught gdcm::Exception in gdcmJPEGBITSCodec); kept as found.
GDCM_ABORT = base64.b64decode(
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABESUNN"
    "AgAAAFVMBAByAAAAAgABAE9CAAACAAAAAAECAAIAVUkaADEuMi44NDAuMTAwMDguNS4xLjQuMS4xLjcAAgADAFVJ"
    "HAAxLjIuODI2LjA+MS4zNjgwMDQzLjguNDk4LjEAAgAQAFVJFgAxLjIuODQwLjEwMDA4LjEuMi40LjUwCAAWAFVJ"
    "GgAxLjIuODQwLjEwMDA4LjUuMS40LjEuMS43AAgAGABVSRwAMS4yLjgyNi4wLjEuMzY4MDA0My44LjQ5OC4xAAgA"
    "YABDUwIAT1QQABAAUE4OAFBISTEyMzQ1Xk5hbWUgEAAgAExPCABQSEkxMjM0NSgAAgBVUwIAAQAoAAQAQ1MMAE1P"
    "Tk9DSFJPTUUyICgAEABVUwIADgAoABEAVVMCAAUAKAAAAVVTAgAIACgAAQFVUwIACAAoAAIBVVMCAAwAKAADAVVT"
    "AgAAACgAADBTUQAALgAAAP7/AOAmAAAAKAACMFVTBgAAAQAACAAoAAYwT1cAAAwAAAAHAAcABwAHAAcABwDgfxAA"
    "T0IAAP/////+/wDgAAAAAP7/AOBOAQAA/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAIBAQEBAQIBAQECAgICAgQD"
    "AgICAgUEBAMEBgUGBgYFBgYGBwkIBgcJBwYGCAsICQoKCgoKBggLDAsKDAkKCgr/wAALCAAOAAUBAREA/8QAHwAA"
    "AQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoLv8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJx"
    "FDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVGV1hZWmNkZWZnaGlqc3R1"
    "dnd4eXqDhIUGh4iJipKTlJWWl5iZm6KjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo"
    "6erx8vP09fb3+Pn6/9oACAEBAAA/AP5/6K//2f7/3eAAAQAA"
)

_FP32 = {"name": "images", "datatype": "FP32"}
_WRAPS = [2**32, 2**32, 1]  # 2**64: wraps to 0 in int64, as np.prod did

REPRODUCERS: list[Reproducer] = [
    Reproducer("dicom-frames-abc", "image", lambda: _grey(NumberOfFrames=("IS", "abc")), (BAD,)),
    Reproducer("dicom-frames-phi", "image", lambda: _grey(NumberOfFrames=("IS", PHI)), (BAD,)),
    Reproducer("dicom-rows-unknown-vr", "image", lambda: _grey(Rows=("ZZ", us(4))), (BAD,)),
    Reproducer("dicom-rows-two-values", "image", lambda: _grey(Rows=("US", us(4, 4))), (BAD,)),
    Reproducer("dicom-rows-zero", "image", lambda: _grey(Rows=("US", us(0))), (BAD,)),
    Reproducer(
        "dicom-syntax-not-a-syntax",
        "image",
        lambda: part10(grey_elements(4, 4), "1.2.3.4.5.6"),
        (BAD,),
    ),
    Reproducer("dicom-modality-lut-malformed", "image", _modality_lut_malformed, (BAD,)),
    Reproducer(
        "dicom-slope-vr-lo",
        "image",
        lambda: _grey(RescaleSlope=("LO", PHI), RescaleIntercept=("DS", "0")),
        (BAD,),
    ),
    Reproducer(
        "dicom-slope-nan",
        "image",
        lambda: _grey(RescaleSlope=("DS", "NaN"), RescaleIntercept=("DS", "0")),
        (BAD,),
        note="answered OK with no findings before: every pixel NaN",
    ),
    Reproducer(
        "dicom-intercept-inf",
        "image",
        lambda: _grey(RescaleSlope=("DS", "1"), RescaleIntercept=("DS", "1e999")),
        (BAD,),
    ),
    Reproducer(
        "dicom-window-nan",
        "image",
        lambda: _grey(WindowCenter=("DS", "NaN"), WindowWidth=("DS", "10")),
        (BAD,),
    ),
    Reproducer("dicom-bits-allocated-7", "image", lambda: _grey(BitsAllocated=("US", 7)), (BAD,)),
    Reproducer("dicom-samples-200", "image", lambda: _grey(SamplesPerPixel=("US", 200)), (BAD,)),
    Reproducer(
        "dicom-rows-columns-65535",
        "image",
        lambda: _grey(Rows=("US", 65535), Columns=("US", 65535)),
        (BIG,),
    ),
    Reproducer(
        "dicom-frames-2g",
        "image",
        lambda: _grey(NumberOfFrames=("IS", "2147483647")),
        (BIG,),
    ),
    Reproducer(
        "dicom-no-pixel-data",
        "image",
        lambda: part10({k: v for k, v in grey_elements().items() if k != (0x7FE0, 0x0010)}),
        (BAD,),
    ),
    Reproducer("dicom-pixel-data-short", "image", lambda: grey_dicom(bytes(3), 4, 4), (BAD,)),
    Reproducer(
        "dicom-rows-empty-unknown-vr",
        "image",
        lambda: _grey(Rows=("TS", b"")),
        (BAD,),
        note="found by bench.fuzz: pydicom converted the empty element, NotImplementedError",
    ),
    Reproducer(
        "dicom-pixel-data-empty-unknown-vr",
        "image",
        lambda: _grey(PixelData=("OJ", b"")),
        (BAD,),
        note="found by bench.fuzz: NotImplementedError (answered UNIMPLEMENTED)",
    ),
    Reproducer(
        "dicom-pixel-data-two-frames",
        "image",
        lambda: grey_dicom(bytes(32), 4, 4),
        ("OK",),
        note="found by bench.fuzz: pixel data for 2 frames of a 1-frame object was a ValueError; "
        "the frames past NumberOfFrames are ignored",
    ),
    Reproducer(
        "dicom-deflate-bomb",
        "image",
        _deflate_bomb,
        (BIG,),
        note="3 MB inflated to 3 GiB before any check (RSS to 10.6 GB)",
    ),
    Reproducer(
        "dicom-jpeg-frame-30000",
        "image",
        lambda: _jpeg_dicom(8, 8, _patch_sof(_jpeg(np.zeros((8, 8), np.uint8)), 30000, 30000)),
        (BAD,),
    ),
    Reproducer(
        "dicom-jpeg-rows-30000",
        "image",
        lambda: _jpeg_dicom(30000, 30000, _jpeg(np.zeros((8, 8), np.uint8))),
        (BIG,),
    ),
    Reproducer(
        "dicom-jpeg-gdcm-abort",
        "image",
        lambda: GDCM_ABORT,
        (BAD,),
        note="found by a fuzz run: python-gdcm aborted the whole process (SIGABRT)",
    ),
    Reproducer("png-30000", "image", _png_bomb, (BIG,)),
    Reproducer(
        "jpeg-30000",
        "image",
        lambda: _patch_sof(_jpeg(np.zeros((8, 8), np.uint8)), 30000, 30000),
        (BIG,),
    ),
    Reproducer("tiff-30000", "image", lambda: _tiff(30000, 30000, big=False), (BIG,)),
    Reproducer(
        "bigtiff-30000",
        "image",
        lambda: _tiff(30000, 30000, big=True),
        (BIG,),
        note="878 KB decoded in full before: 10 s, +1.7 GB RSS",
    ),
    Reproducer(
        "tiff-4-samples-of-64-bits",
        "image",
        lambda: _tiff(1000, 1000, big=False, samples=4, bits=64),
        (BIG,),
    ),
    Reproducer("bmp-30000", "image", _bmp_bomb, (BIG,)),
    Reproducer(
        "png-idat-length-4gib",
        "image",
        _png_idat_4gib,
        (BAD,),
        note="found by bench.fuzz: a 172-byte PNG took 18 s and 4 GB in cv2.imdecode",
    ),
    Reproducer("tiff-strip-past-the-end", "image", _tiff_strip_past_the_end, (BAD,)),
    Reproducer(
        "detect-score-threshold-nan",
        "detect",
        lambda: _detect(score_threshold=float("nan")),
        (BAD,),
        model="boxes",
    ),
    Reproducer(
        "detect-iou-threshold-inf",
        "detect",
        lambda: _detect(iou_threshold=float("inf")),
        (BAD,),
        model="boxes",
    ),
    Reproducer(
        "detect-letterbox-1x30000",
        "detect",
        lambda: _detect_image(np.zeros((1, 30000), np.uint8)),
        ("OK",),
        model="boxes",
        note="found by bench.fuzz: letterboxed to 0 rows, cv2.error answered INTERNAL",
    ),
    Reproducer(
        "infer-contents-out-of-range",
        "infer",
        lambda: _infer([1, 1, 1, 1], "UINT8", uint_contents=[300]),
        (BAD,),
    ),
    Reproducer("infer-shape-wraps-int64", "infer", lambda: _infer(_WRAPS), (BAD,)),
    Reproducer("infer-negative-dimension", "infer", lambda: _infer([-1, 3, 2, 2]), (BAD,)),
    Reproducer("infer-zero-batch", "infer", lambda: _infer([0, 3, 2, 2]), (BAD,)),
    Reproducer("infer-bytes-disagree", "infer", lambda: _infer([1, 3, 2, 2], raw=bytes(5)), (BAD,)),
    Reproducer(
        "infer-batch-64-over-max-8",
        "infer",
        lambda: _infer([64, 3, 2, 2], raw=bytes(64 * 3 * 2 * 2 * 4)),
        (BAD,),
        note="accepted before by a model whose max_batch_size is 8",
    ),
    Reproducer(
        "rest-shape-wraps-int64",
        "rest",
        lambda: _rest([{**_FP32, "shape": _WRAPS, "data": []}]),
        (BAD,),
    ),
    Reproducer(
        "rest-batch-64-over-max-8",
        "rest",
        lambda: _rest([{**_FP32, "shape": [64, 3, 1, 1], "data": [0.0] * 192}]),
        (BAD,),
    ),
    Reproducer(
        "rest-integer-5000-digits",
        "rest",
        lambda: _rest([], text='{"inputs": [], "id": ' + "9" * 5000 + "}"),
        (BAD,),
    ),
    Reproducer("rest-data-nested-900-deep", "rest", lambda: _rest([], text=_deep(900)), (BAD,)),
    Reproducer(
        "rest-timeout-huge",
        "rest",
        lambda: _rest([{**_FP32, "shape": [1], "data": [1]}], {"timeout": 10**400}),
        (BAD,),
    ),
]


def write_corpus(folder: Path = CORPUS) -> list[dict]:
    """Write every reproducer's file and `manifest.json` under `folder`; the manifest rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in REPRODUCERS:
        path = folder / f"{item.name}.bin"
        path.write_bytes(item.build())
        rows.append(
            {
                "file": path.name,
                "api": item.api,
                "model": item.model,
                "expected": list(item.expected),
                "headers": item.headers,
                "note": item.note,
            }
        )
    (folder / "manifest.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    written = write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
    print(f"{len(written)} reproducers written")
