"""Data-plane seams: decoded images in, domain results out, result observers, management."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from serving.dataplane import ImageSource, PredictOptions, ServedResult, decode
from serving.encoding import WireOptions, encode_prediction
from vision.errors import InvalidInputError, ModelNotFoundError
from vision.types import Image, SegmentationResult


def _square() -> np.ndarray:
    pixels = np.zeros((40, 60, 1), np.uint8)
    pixels[10:30, 20:50] = 255
    return pixels


def test_predict_takes_a_decoded_image_and_returns_domain_results(server):
    plane = server.server.plane
    image = Image(_square())
    prediction = server.call(plane.predict("segmentation", "bright", "", image, PredictOptions()))
    assert isinstance(prediction.result, SegmentationResult)
    assert prediction.image is image
    mask = prediction.result.masks[0].mask
    assert mask.shape == (40, 60) and mask[20, 30] and not mask[0, 0]
    # Nothing to decode (a type check); the bound leaves room for a loaded machine's stalls.
    assert prediction.timings["decode_ms"] < 100.0


def test_decoded_and_encoded_inputs_agree(server):
    plane = server.server.plane
    png = cv2.imencode(".png", _square())[1].tobytes()
    from_bytes = server.call(
        plane.predict("segmentation", "bright", "", ImageSource(encoded=png), PredictOptions())
    )
    from_image = server.call(
        plane.predict(
            "segmentation", "bright", "", decode(ImageSource(encoded=png), 0), PredictOptions()
        )
    )
    assert np.array_equal(from_bytes.result.masks[0].mask, from_image.result.masks[0].mask)


def test_wire_encoding_lives_outside_the_plane(server):
    plane = server.server.plane
    prediction = server.call(
        plane.predict("segmentation", "bright", "", Image(_square()), PredictOptions())
    )
    assert not hasattr(prediction, "overlay_png") and not hasattr(prediction, "encoded_masks")
    before = prediction.timings["total_ms"]
    encoded = encode_prediction(prediction, WireOptions(overlay=True, mask_encoding="rle"))
    assert isinstance(encoded.masks[0], list) and encoded.overlay_png.startswith(b"\x89PNG")
    assert prediction.timings["total_ms"] >= before


def test_result_observer_sees_every_served_prediction(server, vision_stub):
    plane = server.server.plane
    seen: list[ServedResult] = []
    plane.add_result_observer(seen.append)
    png = cv2.imencode(".png", _square())[1].tobytes()
    vision_stub.Segment(
        pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=pb.ImageInput(encoded=png))
    )
    served = [s for s in seen if s.origin == "vision.v1"]
    assert served and served[-1].api == "segmentation"
    assert served[-1].prediction.model == "bright"
    assert served[-1].prediction.image.source_format == "png"


def test_a_failing_observer_never_fails_the_request(server, vision_stub):
    plane = server.server.plane

    def broken(_: ServedResult) -> None:
        raise RuntimeError("observer bug")

    plane.add_result_observer(broken)
    png = cv2.imencode(".png", _square())[1].tobytes()
    response = vision_stub.Segment(
        pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=pb.ImageInput(encoded=png))
    )
    assert response.masks


def test_management_goes_through_the_plane(server):
    plane = server.server.plane
    names = {s.name for s in plane.list_models()}
    assert {"bright", "boxes"} <= names
    meta = plane.model_metadata("bright")
    assert meta.platform == "onnxruntime_onnx" and meta.inputs[0].datatype
    assert plane.model_ready("bright") and not plane.model_ready("absent")
    assert plane.server_metadata().name == "vision-serving"
    with pytest.raises(ModelNotFoundError):
        plane.model_metadata("absent")
    rows = plane.repository_index()
    assert any(r.name == "bright" and r.state == "READY" for r in rows)


def test_no_image_is_invalid_input():
    with pytest.raises(InvalidInputError, match="no image"):
        decode(ImageSource(), 0)
