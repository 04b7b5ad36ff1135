"""Detect / Segment with `explain` on the wire: a heat map per finding, same findings as without.

The explain graphs are the stand-ins of tests/serving/tiny_models.py (their "CAM" is the grey
level), so these tests check the serving path; Grad-CAM itself is tested in tests/xai.
"""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest

from app.cli import main
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from serving.client import VisionClient
from tests.serving.conftest import start_server
from tests.serving.tiny_models import build_explainable_repository


@pytest.fixture(scope="module")
def explain_server(tmp_path_factory):
    running = start_server(build_explainable_repository(tmp_path_factory.mktemp("models")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(explain_server):
    channel = grpc.insecure_channel(explain_server.address)
    yield vision_pb2_grpc.VisionServiceStub(channel)
    channel.close()


def _png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def _heat(heatmap: pb.Heatmap) -> np.ndarray:
    return np.frombuffer(heatmap.data, dtype="<f2").reshape(heatmap.height, heatmap.width)


def _gradient(height: int, width: int, channels: int = 3) -> np.ndarray:
    """Brighter to the right, so a grey-level "CAM" is not constant."""
    row = np.linspace(0, 255, width).astype(np.uint8)
    grey = np.repeat(row[np.newaxis], height, axis=0)
    return np.repeat(grey[..., np.newaxis], channels, axis=2) if channels > 1 else grey


def _detect(stub, pixels: np.ndarray, explain: pb.ExplainOptions | None = None):
    request = pb.DetectRequest(model=pb.ModelRef(name="boxes-x"), image=pb.ImageInput())
    request.image.encoded = _png(pixels)
    if explain is not None:
        request.explain.CopyFrom(explain)
    return stub.Detect(request)


def test_detect_explain_heatmap_per_box_same_boxes(stub):
    pixels = _gradient(200, 400)
    plain = _detect(stub, pixels)
    explained = _detect(stub, pixels, pb.ExplainOptions(include_overlay=True))
    assert list(explained.detections) == list(plain.detections)
    assert not plain.heatmaps and not plain.explain_method
    assert len(explained.heatmaps) == len(plain.detections) == 2
    assert sorted(h.detection.score for h in explained.heatmaps) == sorted(
        d.score for d in plain.detections
    )
    for heatmap in explained.heatmaps:
        assert heatmap.detection in list(plain.detections)
        assert heatmap.label == heatmap.detection.label
        heat = _heat(heatmap)
        assert heat.shape == (200, 400)  # the original image, not the 128x128 model input
        assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > 0.9
        assert heat[:, -1].mean() > heat[:, 0].mean()  # follows the grey level
        overlay = cv2.imdecode(np.frombuffer(heatmap.overlay_png, np.uint8), cv2.IMREAD_COLOR)
        assert overlay.shape == (200, 400, 3)
    assert explained.explain_method == "gradcam"
    assert explained.timings.explain_ms > 0
    assert explained.timings.total_ms >= explained.timings.explain_ms


def test_detect_explain_classes_and_max_findings(stub):
    pixels = _gradient(128, 128)
    only_dust = _detect(stub, pixels, pb.ExplainOptions(class_ids=[1]))
    assert len(only_dust.detections) == 2  # every box is still returned
    assert [h.detection.label for h in only_dust.heatmaps] == ["dust"]
    assert not only_dust.heatmaps[0].overlay_png
    top = _detect(stub, pixels, pb.ExplainOptions(max_findings=1))
    assert [h.detection.label for h in top.heatmaps] == ["defect"]  # the highest score


def test_segment_explain_found_and_requested_classes(stub):
    pixels = np.zeros((90, 120), np.uint8)
    pixels[20:50, 30:70] = 255
    image = pb.ImageInput(encoded=_png(pixels))
    model = pb.ModelRef(name="bright-x")
    plain = stub.Segment(pb.SegmentRequest(model=model, image=image))
    found = stub.Segment(
        pb.SegmentRequest(model=model, image=image, explain=pb.ExplainOptions(include_overlay=True))
    )
    assert list(found.masks) == list(plain.masks) and [m.label for m in plain.masks] == ["bright"]
    assert [(h.class_id, h.label) for h in found.heatmaps] == [(1, "bright")]
    heat = _heat(found.heatmaps[0])
    assert heat.shape == (90, 120) and heat.min() >= 0 and heat.max() <= 1
    assert heat[35, 50] > 0.9 and heat[80, 5] < 0.1  # the map follows the bright square
    overlay = cv2.imdecode(np.frombuffer(found.heatmaps[0].overlay_png, np.uint8), 1)
    assert overlay.shape == (90, 120, 3)
    assert found.explain_method == "gradcam" and found.timings.explain_ms > 0

    both = stub.Segment(
        pb.SegmentRequest(
            model=model,
            image=image,
            mask_encoding=pb.MASK_ENCODING_RLE,
            explain=pb.ExplainOptions(class_ids=[1, 0]),
        )
    )
    assert [h.class_id for h in both.heatmaps] == [1, 0]  # requested, found or not
    assert all(_heat(h).shape == (90, 120) for h in both.heatmaps)
    assert both.masks[0].WhichOneof("data") == "rle"

    nothing = stub.Segment(
        pb.SegmentRequest(
            model=model,
            image=pb.ImageInput(encoded=_png(np.zeros((40, 40), np.uint8))),
            explain=pb.ExplainOptions(),
        )
    )
    assert not nothing.masks and not nothing.heatmaps


@pytest.mark.parametrize(
    "options", [pb.ExplainOptions(class_ids=[7]), pb.ExplainOptions(max_findings=-1)]
)
def test_bad_explain_options_are_invalid_argument(stub, options):
    with pytest.raises(grpc.RpcError) as info:
        _detect(stub, _gradient(64, 64), options)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_explain_option_without_explain_graph_is_invalid_argument(server):
    """The status the Explain RPC answers for a model without explain graph (README table)."""
    image = pb.ImageInput(encoded=_png(np.zeros((32, 32, 3), np.uint8)))
    with grpc.insecure_channel(server.address) as channel:
        plain = vision_pb2_grpc.VisionServiceStub(channel)
        assert plain.Detect(pb.DetectRequest(model=pb.ModelRef(name="boxes"), image=image))
        requests = [
            (plain.Detect, pb.DetectRequest(model=pb.ModelRef(name="boxes"), image=image)),
            (plain.Segment, pb.SegmentRequest(model=pb.ModelRef(name="bright"), image=image)),
        ]
        for method, request in requests:
            request.explain.SetInParent()
            with pytest.raises(grpc.RpcError) as info:
                method(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "explain graph" in info.value.details()


def test_client_and_cli_explain(explain_server, tmp_path, capsys):
    path = tmp_path / "cells.png"
    path.write_bytes(_png(_gradient(100, 160)))
    with VisionClient(explain_server.address) as client:
        response = client.detect("boxes-x", path, explain=True)
        assert len(response.heatmaps) == 2
        assert client.heat(response.heatmaps[0]).shape == (100, 160)
        options = client.explain_options(classes=[0], overlay=True, max_findings=4)
        response = client.detect("boxes-x", path, explain=options)
        assert [h.detection.label for h in response.heatmaps] == ["defect"]
        assert response.heatmaps[0].overlay_png
    out = tmp_path / "heat"
    args = ["infer", str(path), "--model", "boxes-x", "--server", explain_server.address]
    assert main([*args, "--explain", str(out)]) == 0
    assert "2 heat map(s) (gradcam" in capsys.readouterr().out
    written = sorted(out.glob("cells-*.png"))
    assert len(written) == 2
    assert cv2.imread(str(written[0])).shape == (100, 160, 3)


@pytest.mark.parametrize(("name", "one_run"), [("bright-x", True), ("bright-y", False)])
def test_segment_explain_one_run_only_when_graph_reproduces_the_model(stub, name, one_run):
    """bright-x's explain graph gives the model's logits bit for bit: one run serves masks and
    heat maps. bright-y's differs (mask scores would change): Segment runs the model too."""
    pixels = np.zeros((60, 80), np.uint8)
    pixels[10:40, 20:50] = 200
    image = pb.ImageInput(encoded=_png(pixels))
    model = pb.ModelRef(name=name)
    plain = stub.Segment(pb.SegmentRequest(model=model, image=image))
    for options in (pb.ExplainOptions(), pb.ExplainOptions(class_ids=[1, 0], max_findings=1)):
        explained = stub.Segment(pb.SegmentRequest(model=model, image=image, explain=options))
        assert list(explained.masks) == list(plain.masks)
        assert [h.class_id for h in explained.heatmaps] == [1]
        assert explained.timings.explain_ms > 0
        assert (explained.timings.inference_ms == 0) == one_run
    if not one_run:  # the graph's own masks would not be Segment's
        alone = stub.Explain(pb.ExplainRequest(model=model, image=image))
        assert [m.score for m in alone.masks] != [m.score for m in plain.masks]
