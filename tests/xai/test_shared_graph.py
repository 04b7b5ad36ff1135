"""Detection explain graphs with one forward pass shared by K targets (issue 19 item 4).

The project's detector at tiny width, seeded and untrained: the exported shared-forward graph
must give, for K = 1, 2 and 5 targets of ONE image, the raw CAMs of the one-image-per-target
eager module and pytorch-grad-cam's maps on the same targets (r >= 0.99), and the torch-free
`Explainer` must feed it the image once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.detect.model import DetectorSpec
from vision.detect.model import build_model as build_detector
from vision.runtime import OnnxModel
from vision.xai import cam
from vision.xai.explain_graph import (
    ExplainExport,
    build_explain_module,
    compare_maps,
    export_explain_graph,
    gradcam_reference,
    run_explain_graph,
)

SIZE = 64
SPEC = DetectorSpec(in_channels=1, num_classes=2, widths=(8, 16, 16, 16), neck=16)
ANCHORS = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2


def _detector() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_detector(SPEC)
    for head in model.heads:
        torch.nn.init.zeros_(head.cls[-1].bias)
    return model


def _image(seed: int) -> torch.Tensor:
    return torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# One backbone layer shared by every level, and the neck outputs (one per head, the maps summed
# on the stride-8 grid: vision.xai.layers).
LAYERS = ("backbone.stages.0", "smooth.0,smooth.1,smooth.2")


@pytest.fixture(scope="module", params=LAYERS)
def shared_export(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExplainExport, object, str]:
    torch.set_num_threads(2)
    model = _detector()
    path = tmp_path_factory.mktemp("shared") / "model.explain.onnx"
    layer = request.param
    result = export_explain_graph(model, layer, "detection", _image(0), path, "hirescam")
    return result, model, layer


def test_shared_graph_io_and_export_parity(shared_export: tuple) -> None:
    result, _, _ = shared_export
    session = OnnxModel(result.path)
    assert [s.shape[:1] for s in session.inputs] == [(1,), (-1,), (-1,)]
    assert session.outputs[1].shape == (-1, SIZE // 8, SIZE // 8)
    parity = result.parity
    assert parity["targets"][0] == 1 and parity["targets"][1] > 10
    assert parity["max_abs_diff"]["cam"] <= 1e-4 * parity["cam_abs_max"]
    if "gradcam" in parity:
        assert parity["gradcam"]["pearson_min"] >= 0.99


@pytest.mark.parametrize("count", [1, 2, 5])
def test_k_targets_of_one_image_match_per_target_runs(shared_export: tuple, count: int) -> None:
    result, model, layer = shared_export
    session = OnnxModel(result.path)
    image = _image(3)
    rng = np.random.default_rng(count)
    classes = torch.tensor(rng.integers(0, 2, count))
    anchors = torch.tensor(rng.choice(ANCHORS, count, replace=False))  # every level
    got = run_explain_graph(session, (image, classes, anchors))
    assert got["cam"].shape == (count, SIZE // 8, SIZE // 8)
    module = build_explain_module(model, layer, "detection", "hirescam")
    repeated = (image.repeat(count, 1, 1, 1), classes, anchors)
    want = module(*repeated)
    scale = float(np.abs(want[-1].detach().numpy()).max())
    np.testing.assert_allclose(got["cam"], want[-1].detach().numpy(), atol=1e-4 * scale)
    np.testing.assert_allclose(got["output0"][0], want[0][0].numpy(), atol=1e-4)
    pytest.importorskip("pytorch_grad_cam", reason="pip install grad-cam for the reference")
    ours = cam.upsample(cam.normalize(got["cam"]), SIZE, SIZE)
    cell = SIZE // 2 if "," in layer else 0  # the stride-32 level's cell: 32 px
    report = compare_maps(ours, gradcam_reference(module, repeated), cell_px=cell)
    peaks = max(report["argmax_tied"], report.get("argmax_within_cell", 0))
    assert report["pearson_min"] >= 0.99 and peaks == count
