"""vision.v1 on the wire: results in original coordinates, and status codes for bad input."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from protos.vision.v1 import vision_pb2 as pb
from vision.masks import decode_png, decode_rle


def _png(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def _square_image(height: int = 90, width: int = 120, dtype=np.uint8) -> np.ndarray:
    """Black image with a bright square at rows 20..49, columns 30..69."""
    image = np.zeros((height, width), dtype=dtype)
    image[20:50, 30:70] = np.iinfo(dtype).max
    return image


def _segment(stub, image: pb.ImageInput, **kwargs) -> pb.SegmentResponse:
    return stub.Segment(pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=image, **kwargs))


def _dicom(
    pixels: np.ndarray, monochrome1: bool = False, spacing=(0.5, 0.25), bits_stored: int = 16
) -> bytes:
    """A DICOM of `pixels`; without a window its stored range (`bits_stored`) maps to 0..255."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Secret^Patient"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored = 16, bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = list(spacing)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_segment_png_mask_in_original_coordinates(vision_stub):
    response = _segment(vision_stub, pb.ImageInput(encoded=_png(_square_image())))
    assert (response.image_size.width, response.image_size.height) == (120, 90)
    assert [m.label for m in response.masks] == ["bright"]
    mask = decode_png(response.masks[0].png)
    assert mask.shape == (90, 120)
    expected = _square_image() > 0
    assert np.mean(mask == expected) > 0.97
    assert abs(response.masks[0].pixel_area - expected.sum()) < 0.1 * expected.sum()
    assert not response.masks[0].HasField("physical_area_mm2")
    assert response.timings.total_ms > 0


def test_segment_image_score_from_the_configured_output(vision_stub):
    """A config naming an image_score_output gets that output's value on the wire; a model
    without one leaves the field unset (not 0)."""
    image = pb.ImageInput(encoded=_png(_square_image()))
    request = pb.SegmentRequest(model=pb.ModelRef(name="bright-scored"), image=image)
    scored = vision_stub.Segment(request)
    bright_fraction = float(np.mean(_square_image() > 0))  # mean grey of the stretched input
    assert scored.HasField("image_score")
    assert scored.image_score == pytest.approx(bright_fraction, abs=0.02)
    assert [m.label for m in scored.masks] == ["bright"]
    assert not _segment(vision_stub, image).HasField("image_score")


def test_segment_rle_matches_png(vision_stub):
    image = pb.ImageInput(encoded=_png(_square_image()))
    png = decode_png(_segment(vision_stub, image).masks[0].png)
    rle = _segment(vision_stub, image, mask_encoding=pb.MASK_ENCODING_RLE).masks[0].rle
    assert np.array_equal(decode_rle(list(rle.counts), 90, 120), png)


@pytest.mark.parametrize(
    "dtype,pixel_type",
    [
        (np.uint8, pb.PIXEL_TYPE_UINT8),
        (np.uint16, pb.PIXEL_TYPE_UINT16),
    ],
)
def test_segment_raw_pixels(vision_stub, dtype, pixel_type):
    pixels = _square_image(dtype=dtype)
    raw = pb.RawImage(data=pixels.tobytes(), shape=list(pixels.shape), dtype=pixel_type)
    response = _segment(vision_stub, pb.ImageInput(raw=raw))
    assert np.mean(decode_png(response.masks[0].png) == (pixels > 0)) > 0.97


def test_segment_16bit_tiff(vision_stub):
    ok, data = cv2.imencode(".tiff", _square_image(dtype=np.uint16))
    response = _segment(vision_stub, pb.ImageInput(encoded=data.tobytes()))
    assert response.masks[0].pixel_area > 1000


def test_segment_dicom_reports_physical_area(vision_stub):
    pixels = _square_image(dtype=np.uint16) // 16  # 12-bit values
    response = _segment(vision_stub, pb.ImageInput(encoded=_dicom(pixels, bits_stored=12)))
    mask = response.masks[0]
    assert mask.HasField("physical_area_mm2")
    assert mask.physical_area_mm2 == pytest.approx(mask.pixel_area * 0.5 * 0.25)


def test_segment_dicom_monochrome1_is_inverted(vision_stub):
    pixels = _square_image(dtype=np.uint16) // 16
    encoded = _dicom(pixels, monochrome1=True, bits_stored=12)
    response = _segment(vision_stub, pb.ImageInput(encoded=encoded))
    mask = decode_png(response.masks[0].png)
    assert mask[0, 0] and not mask[30, 50]  # the square is now the dark part


def test_detect_boxes_in_original_coordinates(vision_stub):
    image = np.zeros((200, 400, 3), dtype=np.uint8)  # letterboxed to 128x128: scale 0.32
    request = pb.DetectRequest(
        model=pb.ModelRef(name="boxes"),
        image=pb.ImageInput(encoded=_png(image)),
        include_overlay=True,
    )
    response = vision_stub.Detect(request)
    labels = sorted(d.label for d in response.detections)
    assert labels == ["defect", "dust"]
    defect = next(d for d in response.detections if d.label == "defect")
    # Model box centre (40, 40), 20x20; pad_y = (128 - 64) / 2 = 32; scale 128/400.
    scale, pad_y = 128 / 400, 32
    assert defect.box.x1 == pytest.approx(30 / scale, abs=1.5)
    assert defect.box.y1 == 0.0  # (30 - pad_y) / scale is above the image: clipped
    assert defect.box.y2 == pytest.approx((50 - pad_y) / scale, abs=1.5)
    assert defect.box.x2 == pytest.approx(50 / scale, abs=1.5)
    assert defect.score == pytest.approx(0.9, abs=1e-5)
    overlay = cv2.imdecode(np.frombuffer(response.overlay_png, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (200, 400, 3)


def test_detect_score_threshold_override(vision_stub):
    image = pb.ImageInput(encoded=_png(np.zeros((128, 128, 3), np.uint8)))
    request = pb.DetectRequest(model=pb.ModelRef(name="boxes"), image=image, score_threshold=0.75)
    assert [d.label for d in vision_stub.Detect(request).detections] == ["defect"]


def test_explicit_version(vision_stub):
    image = pb.ImageInput(encoded=_png(_square_image()))
    request = pb.SegmentRequest(model=pb.ModelRef(name="bright", version="1"), image=image)
    assert vision_stub.Segment(request).model_version == "1"
    latest = vision_stub.Segment(pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=image))
    assert latest.model_version == "2"


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


BAD_REQUESTS = {
    "corrupt bytes": (
        pb.ImageInput(encoded=_png(_square_image())[:60]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "gif": (pb.ImageInput(encoded=b"GIF89a" + b"\0" * 40), grpc.StatusCode.INVALID_ARGUMENT),
    "empty bytes": (pb.ImageInput(encoded=b""), grpc.StatusCode.INVALID_ARGUMENT),
    "no image": (pb.ImageInput(), grpc.StatusCode.INVALID_ARGUMENT),
    "raw size mismatch": (
        pb.ImageInput(raw=pb.RawImage(data=b"\0" * 10, shape=[4, 4], dtype=pb.PIXEL_TYPE_UINT8)),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "raw no dtype": (
        pb.ImageInput(raw=pb.RawImage(data=b"\0" * 16, shape=[4, 4])),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "oversize": (
        pb.ImageInput(encoded=_png(np.zeros((1500, 1500), np.uint8))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_status_codes(vision_stub, case):
    image, expected = BAD_REQUESTS[case]
    code, details = _code(lambda: _segment(vision_stub, image))
    assert code == expected, details
    assert details and "internal" not in details.lower()
    # The server is still up and serving.
    assert _segment(vision_stub, pb.ImageInput(encoded=_png(_square_image()))).masks


def test_unknown_model_and_version_are_not_found(vision_stub):
    image = pb.ImageInput(encoded=_png(_square_image()))
    code, details = _code(
        lambda: vision_stub.Segment(pb.SegmentRequest(model=pb.ModelRef(name="nope"), image=image))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "bright" in details
    code, _ = _code(
        lambda: vision_stub.Segment(
            pb.SegmentRequest(model=pb.ModelRef(name="bright", version="9"), image=image)
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


def test_wrong_task_is_invalid_argument(vision_stub):
    image = pb.ImageInput(encoded=_png(_square_image()))
    code, details = _code(
        lambda: vision_stub.Detect(pb.DetectRequest(model=pb.ModelRef(name="bright"), image=image))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Segment" in details


def test_list_models_and_metadata(vision_stub):
    models = {m.name: m for m in vision_stub.ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {"bright", "bright-scored", "boxes"}
    assert [v.version for v in models["bright"].versions] == ["1", "2"]
    assert all(v.state == pb.MODEL_STATE_READY for v in models["bright"].versions)
    meta = vision_stub.GetModelMetadata(pb.GetModelMetadataRequest(model=pb.ModelRef(name="boxes")))
    assert meta.task == "detection" and list(meta.labels) == ["defect", "dust"]
    assert meta.input.height == 128 and "CPUExecutionProvider" in meta.providers


def test_message_over_the_configured_size_is_resource_exhausted(repository):
    from protos.vision.v1 import vision_pb2_grpc
    from tests.serving.conftest import start_server

    running = start_server(repository, max_message_bytes=100_000)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            noise = np.random.default_rng(0).integers(0, 255, (400, 400), dtype=np.uint8)
            code, _ = _code(lambda: _segment(stub, pb.ImageInput(encoded=_png(noise))))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _segment(stub, pb.ImageInput(encoded=_png(_square_image()))).masks
    finally:
        running.stop()
