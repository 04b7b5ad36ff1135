"""The bundled models' explain graphs on real images.

The torch-free `Explainer` heat maps (original-image size) must match pytorch-grad-cam's
GradCAM on the eager torch network with the shipped weights (`vision.weights.load_bundled`):
same layer (config `explain.target_layer`), same targets, same preprocessing
(`vision.pipeline.Pipeline`), and both maps taken to the original size the same way
(`to_original_maps`, then min-max). Skipped when a model, its explain graph or weights, the
dataset or pytorch-grad-cam is missing (export with `vision explain-export`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vision.config import ModelConfig, load_config
from vision.io import decode_image
from vision.paths import PROJECT_ROOT, datasets_root
from vision.pipeline import Pipeline
from vision.postprocess import to_original_maps
from vision.runtime import OnnxModel
from vision.types import DetectionResult
from vision.xai import cam
from vision.xai.explainer import Explainer

MODELS = PROJECT_ROOT / "models"
DRIVE_TEST = datasets_root() / "drive" / "DRIVE" / "test" / "images"
BCCD = datasets_root() / "bccd" / "BCCD" / "JPEGImages"
PCB = datasets_root() / "deeppcb" / "PCBData"
TILES = datasets_root() / "magnetic-tile"
CASES = {
    "retina-vessels": [DRIVE_TEST / "01_test.tif", DRIVE_TEST / "02_test.tif"],
    "blood-cells": [BCCD / "BloodImage_00007.jpg"],  # in BCCD's test split
    "pcb-defects": [PCB / "group20085" / "20085" / "20085291_test.jpg"],  # DeepPCB test split
    "tile-defects": [TILES / "MT_Blowhole" / "Imgs" / "exp1_num_322605.jpg"],  # recorded test
}
MIN_PEARSON = 0.99
TIE = 1e-3  # argmax ties on the [0, 1] scale
MAX_DETECTIONS = 2


def _skip_unless(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason)


def _explained(name: str) -> ModelConfig:
    """The model's config, skipping when it or its explain graph is not in the repository."""
    _skip_unless((MODELS / name / "config.yaml").is_file(), f"models/{name} is not bundled")
    config = load_config(MODELS / name)
    graph = MODELS / name / "1" / config.explain.file
    _skip_unless(
        bool(config.explain.file) and graph.is_file(),
        f"models/{name} has no explain graph (vision explain-export --model {name} ...)",
    )
    return config


def _torch_model(config: ModelConfig) -> Any:
    """The eager network with the weights shipped beside the ONNX file, in eval mode."""
    from vision.weights import load_bundled

    try:
        return load_bundled(config.name, MODELS)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("name", sorted(CASES))
def test_explainer_matches_pytorch_grad_cam(name: str) -> None:
    pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (grad-cam) not installed")
    torch = pytest.importorskip("torch")
    from vision.xai.explain_graph import build_explain_module, cell_size, gradcam_reference

    torch.set_num_threads(2)
    config = _explained(name)
    images = [p for p in CASES[name] if p.is_file()]
    _skip_unless(bool(images), f"no test images for {name} under {datasets_root()}")
    folder = MODELS / name / "1"
    explainer = Explainer(config, OnnxModel(folder / config.explain.file))
    pipeline = Pipeline(config)
    kind = config.task
    layer, method = config.explain.target_layer, config.explain.method
    module = build_explain_module(_torch_model(config), layer, kind, method)
    compared = 0
    for path in images:
        tensor, meta = pipeline.preprocess(decode_image(path.read_bytes()))
        if kind == "detection":
            outputs = OnnxModel(folder / config.model_file).run({"images": tensor[None]})
            result = pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
            top = sorted(result.detections, key=lambda d: -d.score)[:MAX_DETECTIONS]
            found = explainer.explain_detections(tensor, meta, DetectionResult(top))
            classes = [d.class_id for d in top]
            aux = torch.tensor([d.anchor for d in top])
        else:
            _, found = explainer.explain_segmentation(tensor, meta, [1])
            classes = [1]
            aux = torch.ones(1, 1, *tensor.shape[-2:])
        assert found, f"{path.name}: nothing to explain"
        batch = torch.from_numpy(np.repeat(tensor[None], len(found), axis=0))
        reference = gradcam_reference(module, (batch, torch.tensor(classes), aux))
        for got, ref_input in zip(found, reference, strict=True):
            want = cam.minmax(to_original_maps(ref_input[None], meta)[0])
            assert got.heat.shape == (meta.original_height, meta.original_width)
            r = cam.pearson(got.heat, want)
            assert r >= MIN_PEARSON, f"{name} {path.name} class {got.class_id}: r={r:.5f}"
            peak = np.unravel_index(int(got.heat.argmax()), got.heat.shape)
            if "," in layer:  # several layers: the peak within one CAM cell (compare_maps)
                theirs = np.unravel_index(int(want.argmax()), want.shape)
                cell = cell_size(module, torch.from_numpy(tensor[None])) / meta.scale_y
                apart = max(abs(int(a) - int(b)) for a, b in zip(peak, theirs, strict=True))
                assert apart <= cell + 1, f"{name} {path.name}: peaks {apart} px apart"
            else:
                assert want[peak] >= want.max() - TIE, f"{name} {path.name}: argmax differs"
            compared += 1
    assert compared >= 1


def _drive_green_dicom(path: Path) -> Path:
    """A MONOCHROME2 8-bit DICOM of a DRIVE test image's green channel."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    green = np.ascontiguousarray(
        decode_image((DRIVE_TEST / "01_test.tif").read_bytes()).pixels[..., 1]
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.PatientID = "OT", "test"
    ds.Rows, ds.Columns = green.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = green.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_vision_explain_writes_pngs_for_dicom(tmp_path: Path) -> None:
    _explained("retina-vessels")
    _skip_unless((DRIVE_TEST / "01_test.tif").is_file(), f"DRIVE test images missing: {DRIVE_TEST}")
    dcm = _drive_green_dicom(tmp_path / "drive01_green.dcm")
    out = tmp_path / "out"
    code = (
        "import sys; from vision.xai.cli import explain; "
        f"rc = explain([{str(dcm)!r}, '--model', 'retina-vessels', '--out', {str(out)!r}]); "
        "assert 'torch' not in sys.modules, 'vision explain imported torch'; sys.exit(rc)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    pngs = sorted(out.glob("*.png"))
    assert pngs and (out / "explain.json").is_file()
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = decode_image(pngs[0].read_bytes())
    assert (image.height, image.width) == (584, 565)  # the DICOM's own size
