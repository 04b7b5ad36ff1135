"""A MONAI UNet exported with `torch.onnx.export` and served by writing a config.yaml only.

The server's Segment masks must equal the argmax of the torch model's own output on exactly the
tensor the config's preprocessing yields (images are sent at the model's input size, so there is
no resize), except where the top two logits are within 1e-4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from protos.vision.v1 import vision_pb2 as pb
from tests.thirdparty.conftest import png_bytes, write_repository
from vision.masks import decode_png
from vision.paths import datasets_root

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e .[train])")
nets = pytest.importorskip("monai.networks.nets", reason="monai is not installed (.[train])")

SIZE = 96  # model input height and width
LABELS = ["background", "vessel", "lesion"]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TIE = 1e-4  # pixels whose top-2 logits are closer than this may go either way


def monai_config() -> dict[str, Any]:
    """The config a user writes for this export (see docs/third-party-models.md)."""
    return {
        "name": "monai-unet",
        "task": "segmentation",
        "labels": LABELS,
        "input": {"name": "image", "height": SIZE, "width": SIZE, "channels": 3},
        "preprocess": {
            "resize": "stretch",
            "scale": 1 / 255,
            "mean": list(MEAN),
            "std": list(STD),
            "channel_order": "RGB",
        },
        "postprocess": {"type": "argmax", "output": "logits", "background_class": 0},
        "batching": {"max_batch_size": 4, "max_queue_delay_ms": 2},
        "runtime": {"providers": "cpu", "intra_op_threads": 1, "inter_op_threads": 1},
    }


def build_unet() -> Any:
    """An untrained MONAI UNet with fixed weights (numerical equality needs no training)."""
    torch.manual_seed(0)
    model = nets.UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=len(LABELS),
        channels=(8, 16, 32),
        strides=(2, 2),
        num_res_units=1,
    )
    return model.eval()


def export_unet(model: Any, path: Path) -> Path:
    """Plain `torch.onnx.export`, batch axis dynamic, as a user would write it."""
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.onnx.export(
        model,
        (torch.zeros(1, 3, SIZE, SIZE),),
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        dynamic_shapes=({0: batch},),
        dynamo=True,
    )
    program.save(str(path))
    return path


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The torch model and a repository serving its ONNX export."""
    root = tmp_path_factory.mktemp("monai")
    model = build_unet()
    onnx_path = export_unet(model, root / "unet.onnx")
    return model, write_repository(root / "models", onnx_path, monai_config())


@pytest.fixture(scope="module")
def stub(unet: tuple[Any, Path], serve: Any) -> Any:
    """A vision.v1 stub of a server over the MONAI repository."""
    return serve(unet[1])


def synthetic_image() -> np.ndarray:
    """Smooth gradients plus noise, RGB uint8 at the model's input size."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, SIZE, dtype=np.float32)
    base = np.stack([ramp[None, :].repeat(SIZE, 0), ramp[:, None].repeat(SIZE, 1)], axis=2)
    base = np.concatenate([base, 255 - base[:, :, :1]], axis=2)
    noisy = base + rng.normal(0, 40, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def drive_image() -> np.ndarray:
    """A crop of a real DRIVE fundus image (RGB), skipped when the datasets are absent."""
    folder = datasets_root() / "drive" / "DRIVE" / "training" / "images"
    files = sorted(folder.glob("*.tif")) if folder.is_dir() else []
    if not files:
        pytest.skip(f"DRIVE images not found under {datasets_root()} (set VISION_DATASETS)")
    bgr = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[250 : 250 + SIZE, 200 : 200 + SIZE, ::-1])


def torch_logits(model: Any, rgb: np.ndarray) -> np.ndarray:
    """[C, H, W] logits of the torch model for the config's preprocessing of `rgb`."""
    x = (rgb.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    tensor = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        return model(tensor)[0].numpy()


def server_labels(stub: Any, rgb: np.ndarray) -> np.ndarray:
    """The server's class per pixel, rebuilt from its per-class PNG masks (0 where none)."""
    request = pb.SegmentRequest(
        model=pb.ModelRef(name="monai-unet"), image=pb.ImageInput(encoded=png_bytes(rgb))
    )
    response = stub.Segment(request)
    assert (response.image_size.height, response.image_size.width) == rgb.shape[:2]
    labels = np.zeros(rgb.shape[:2], dtype=np.int64)
    for mask in response.masks:
        assert mask.label == LABELS[mask.class_id]
        pixels = decode_png(mask.png)
        assert not labels[pixels].any(), "masks of two classes overlap"
        labels[pixels] = mask.class_id
    return labels


@pytest.mark.parametrize("make_image", [synthetic_image, drive_image], ids=["synthetic", "drive"])
def test_segment_equals_torch_argmax(unet, stub, make_image) -> None:
    model = unet[0]
    rgb = make_image()
    logits = torch_logits(model, rgb)
    expected = logits.argmax(axis=0)
    top2 = np.sort(logits, axis=0)[-2:]
    ambiguous = (top2[1] - top2[0]) < TIE
    got = server_labels(stub, rgb)
    differ = (got != expected) & ~ambiguous
    assert not differ.any(), f"{int(differ.sum())} pixels differ from torch's argmax"
    assert len(np.unique(expected)) > 1, "degenerate test: the model predicts one class only"
