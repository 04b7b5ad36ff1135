"""Explain on the wire: heat maps per finding, in original-image size, float16 + overlay PNG.

The explain graphs here are stand-ins with the real signature (their "CAM" is the grey level),
so these tests check the serving path; Grad-CAM parity itself is tested in tests/xai.
"""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.serving.conftest import start_server
from tests.serving.tiny_models import build_explainable_repository


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    running = start_server(build_explainable_repository(tmp_path_factory.mktemp("models")))
    channel = grpc.insecure_channel(running.address)
    yield vision_pb2_grpc.VisionServiceStub(channel)
    channel.close()
    running.stop()


def _png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def _heat(heatmap: pb.Heatmap) -> np.ndarray:
    return np.frombuffer(heatmap.data, dtype="<f2").reshape(heatmap.height, heatmap.width)


def test_segmentation_heatmap_per_found_class(stub):
    pixels = np.zeros((90, 120), np.uint8)
    pixels[20:50, 30:70] = 255
    response = stub.Explain(
        pb.ExplainRequest(
            model=pb.ModelRef(name="bright-x"),
            image=pb.ImageInput(encoded=_png(pixels)),
            include_overlay=True,
        )
    )
    assert [m.label for m in response.masks] == ["bright"]
    assert [h.label for h in response.heatmaps] == ["bright"]
    heat = _heat(response.heatmaps[0])
    assert heat.shape == (90, 120) and heat.min() >= 0 and heat.max() <= 1
    assert heat[35, 50] > 0.9 and heat[80, 5] < 0.1  # the map follows the bright square
    overlay = cv2.imdecode(np.frombuffer(response.heatmaps[0].overlay_png, np.uint8), 1)
    assert overlay.shape == (90, 120, 3)
    assert response.method == "gradcam" and response.timings.total_ms > 0


def test_segmentation_requested_class_and_bad_class(stub):
    image = pb.ImageInput(encoded=_png(np.zeros((64, 64), np.uint8)))
    response = stub.Explain(
        pb.ExplainRequest(model=pb.ModelRef(name="bright-x"), image=image, class_ids=[0])
    )
    assert [h.class_id for h in response.heatmaps] == [0]
    with pytest.raises(grpc.RpcError) as info:
        stub.Explain(
            pb.ExplainRequest(model=pb.ModelRef(name="bright-x"), image=image, class_ids=[7])
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_detection_heatmap_per_finding(stub):
    response = stub.Explain(
        pb.ExplainRequest(
            model=pb.ModelRef(name="boxes-x"),
            image=pb.ImageInput(encoded=_png(np.zeros((200, 400, 3), np.uint8))),
        )
    )
    assert sorted(d.label for d in response.detections) == ["defect", "dust"]
    assert len(response.heatmaps) == 2
    assert {h.detection.label for h in response.heatmaps} == {"defect", "dust"}
    assert all(_heat(h).shape == (200, 400) for h in response.heatmaps)


def test_model_without_explain_graph_is_invalid_argument(repository):
    running = start_server(repository)
    try:
        with grpc.insecure_channel(running.address) as channel:
            plain = vision_pb2_grpc.VisionServiceStub(channel)
            meta = plain.GetModelMetadata(
                pb.GetModelMetadataRequest(model=pb.ModelRef(name="bright"))
            )
            assert not meta.explainable
            with pytest.raises(grpc.RpcError) as info:
                plain.Explain(
                    pb.ExplainRequest(
                        model=pb.ModelRef(name="bright"),
                        image=pb.ImageInput(encoded=_png(np.zeros((8, 8), np.uint8))),
                    )
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "explain" in info.value.details()
    finally:
        running.stop()
