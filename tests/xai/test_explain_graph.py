"""Grad-CAM inside exported ONNX graphs: parity with eager torch and pytorch-grad-cam, batching.

Small seeded, untrained nets: the project's MONAI UNet (tile-defects recipe, narrow) and the
project's detector at tiny width. Two exports in all (module-scoped fixtures).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from vision.detect.model import DetectorSpec
from vision.detect.model import build_model as build_detector
from vision.runtime import OnnxModel
from vision.segment.model import build_model as build_segmenter
from vision.segment.model import get_recipe
from vision.types import PreprocessMeta
from vision.xai import cam
from vision.xai.explain_graph import (
    ExplainExport,
    build_explain_module,
    compare_maps,
    export_explain_graph,
    gradcam_reference,
    run_explain_graph,
)
from vision.xai.targets import default_targets

try:
    import pytorch_grad_cam  # noqa: F401

    HAS_GRADCAM = True
except ImportError:
    HAS_GRADCAM = False
needs_gradcam = pytest.mark.skipif(
    not HAS_GRADCAM,
    reason="pytorch-grad-cam is not installed (test-only dependency: pip install grad-cam)",
)
SIZE = 64
DET_SPEC = DetectorSpec(in_channels=1, num_classes=2, widths=(8, 16, 16, 16), neck=16)
FINE_ANCHORS = (SIZE // 8) ** 2  # anchors of the stride-8 level come first


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _segmenter() -> torch.nn.Module:
    torch.manual_seed(0)
    labels = ("background", "a", "b", "c", "d", "e")  # six classes: targets use ids 1..5
    recipe = get_recipe("tile-defects", channels=(8, 16, 32), strides=(2, 2), labels=labels)
    return build_segmenter(recipe)


def _detector() -> torch.nn.Module:
    """Class biases at 0 (not the -4.6 prior): scores near 0.5, gradients not vanishing."""
    torch.manual_seed(0)
    model = build_detector(DET_SPEC)
    for head in model.heads:
        torch.nn.init.zeros_(head.cls[-1].bias)
    return model


def _seg_targets(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes 1..n; image 0 explains the left half, the others the whole image."""
    mask = torch.ones(n, 1, SIZE, SIZE)
    mask[0, :, :, SIZE // 2 :] = 0.0
    return torch.arange(1, n + 1) % 6, mask


@pytest.fixture(scope="module")
def seg_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExplainExport, torch.nn.Module]:
    path = tmp_path_factory.mktemp("seg") / "model.explain.onnx"
    model = _segmenter()
    result = export_explain_graph(
        model, None, "segmentation", _images(2), path, "gradcam", _seg_targets(2)
    )
    return result, model


@pytest.fixture(scope="module")
def det_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExplainExport, torch.nn.Module]:
    path = tmp_path_factory.mktemp("det") / "model.explain.onnx"
    model = _detector()
    targets = (torch.tensor([1, 0]), torch.tensor([27, 40]))  # stride-8 anchors
    result = export_explain_graph(model, None, "detection", _images(2), path, "gradcam", targets)
    return result, model


def _check_parity(result: ExplainExport) -> None:
    parity = result.parity
    assert parity["max_abs_diff"]["cam"] <= 1e-4 * parity["cam_abs_max"] + 1e-12
    assert parity["cam_abs_max"] > 0.0
    if HAS_GRADCAM:
        ref = parity["gradcam"]
        assert ref["pearson_min"] >= 0.99
        assert ref["argmax_identical"] == ref["n"]


def test_segmentation_graph_io_and_parity(seg_export: tuple) -> None:
    result, _ = seg_export
    assert result.input_names == ["images", "target_class", "target_mask"]
    assert result.output_names == ["logits", "cam"]
    session = OnnxModel(result.path)
    assert [s.shape[0] for s in session.inputs + session.outputs] == [-1] * 5
    assert session.outputs[1].shape[1:] == (SIZE // 2, SIZE // 2)  # model.1.submodule: stride 2
    assert result.parity["max_abs_diff"]["logits"] < 1e-4
    _check_parity(result)


def test_detection_graph_io_and_parity(det_export: tuple) -> None:
    result, _ = det_export
    assert result.input_names == ["images", "target_class", "target_anchor"]
    assert result.output_names == ["output0", "cam"]
    session = OnnxModel(result.path)
    assert session.outputs[1].shape[1:] == (SIZE // 8, SIZE // 8)  # smooth.0: stride 8
    _check_parity(result)


def _one_run_vs_single(path, image: torch.Tensor, targets: tuple[torch.Tensor, ...]) -> None:
    """N targets on N copies of one image in ONE run == N single-target runs."""
    session = OnnxModel(path)
    n = targets[0].shape[0]
    batch = run_explain_graph(session, (image.repeat(n, 1, 1, 1), *targets))["cam"]
    assert batch.shape[0] == n
    for i in range(n):
        single = run_explain_graph(session, (image, *(t[i : i + 1] for t in targets)))["cam"]
        np.testing.assert_allclose(batch[i], single[0], rtol=1e-4, atol=1e-6 * np.abs(single).max())
    assert np.abs(batch[0] - batch[1]).max() > 1e-3 * np.abs(batch).max()  # targets differ


def test_many_segmentation_targets_in_one_run(seg_export: tuple) -> None:
    _one_run_vs_single(seg_export[0].path, _images(1, seed=3), _seg_targets(4))


def test_many_detection_targets_in_one_run(det_export: tuple) -> None:
    targets = (torch.tensor([0, 1, 1]), torch.tensor([9, 9, FINE_ANCHORS - 1]))
    _one_run_vs_single(det_export[0].path, _images(1, seed=3), targets)


@needs_gradcam
@pytest.mark.parametrize("method", ["gradcam++", "hirescam"])
def test_other_methods_match_reference(method: str) -> None:
    module = build_explain_module(_segmenter(), None, "segmentation", method)
    inputs = (_images(2), *_seg_targets(2))
    with torch.no_grad():
        raw = module(*inputs)[-1].numpy()
    ours = cam.upsample(cam.normalize(raw), SIZE, SIZE)
    report = compare_maps(ours, gradcam_reference(module, inputs))
    assert report["pearson_min"] >= 0.99 and report["argmax_identical"] == 2


@needs_gradcam
def test_basic_unet_default_layer_matches_reference() -> None:
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    model = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 4, 8, 8, 16, 4))
    module = build_explain_module(model, None, "segmentation")
    assert module.target_layer is model.upcat_1
    inputs = (_images(2), *_seg_targets(2))
    raw = module(*inputs)[-1].detach().numpy()
    assert raw.shape == (2, SIZE, SIZE)
    report = compare_maps(cam.normalize(raw), gradcam_reference(module, inputs))
    assert report["pearson_min"] >= 0.99 and report["argmax_identical"] == 2


@needs_gradcam
def test_detector_coarse_anchor_needs_a_shared_layer() -> None:
    """A stride-32 anchor has a zero CAM at smooth.0 and a real one at backbone.stages.0."""
    model, images = _detector(), _images(1)
    inputs = (images, torch.tensor([1]), torch.tensor([FINE_ANCHORS + 16 + 2]))
    fine = build_explain_module(model, "smooth.0", "detection")
    assert not fine(*inputs)[-1].any()
    shared = build_explain_module(model, "backbone.stages.0", "detection")
    raw = shared(*inputs)[-1].detach().numpy()
    assert np.abs(raw).max() > 0
    ours = cam.upsample(cam.normalize(raw), SIZE, SIZE)
    report = compare_maps(ours, gradcam_reference(shared, inputs))
    assert report["pearson_min"] >= 0.99 and report["argmax_identical"] == 1


def test_default_detection_target_is_the_best_anchor() -> None:
    output = torch.zeros(1, 4 + 2, 10)
    output[0, 4 + 1, 7] = 0.9
    output[0, 4 + 0, 3] = 0.5
    cls, anchor = default_targets("detection", output)
    assert cls.tolist() == [1] and anchor.tolist() == [7]


def test_heatmap_undoes_letterbox() -> None:
    """A 100x200 image letterboxed into 64x64: scale 0.32, 16 rows of padding top and bottom."""
    meta = PreprocessMeta(100, 200, 0.32, 0.32, 0.0, 16.0, 64, 64)
    raw = np.full((8, 8), -1.0, np.float32)  # stride 8; rows 0-1 and 6-7 are padding
    raw[0, :] = 50.0  # a strong response in the padding must not set the scale
    raw[3, 6] = 2.0  # input pixel (52, 28) -> original (162.5, 37.5)
    heat = cam.heatmap(raw, meta)
    assert heat.shape == (100, 200) and heat.dtype == np.float32
    assert heat.min() == 0.0 and heat.max() == pytest.approx(1.0, abs=1e-6)
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert abs(x - 162.5) <= 8 and abs(y - 37.5) <= 8


def test_normalize_matches_gradcam_scaling() -> None:
    raw = np.array([[[-1.0, 0.0], [1.0, 3.0]]], np.float32)
    np.testing.assert_allclose(cam.normalize(raw), [[[0, 0], [1 / 3, 1]]], atol=1e-6)
    assert cam.upsample(raw, 4, 6).shape == (1, 4, 6)
    assert cam.pearson(raw, 2 * raw + 1) == pytest.approx(1.0)


def test_cam_module_is_torch_free() -> None:
    code = "import sys, vision.xai.cam; assert 'torch' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr
