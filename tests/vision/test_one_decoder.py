"""One decoder for training and serving: the training readers give the arrays the server sees.

The serving path is `decode_image(path.read_bytes())`, then the channel conversion that starts
`Preprocessor` (`convert_channels`); the training paths are `vision.io.read_image`, the detection
reader `vision.datasets.images.load_image` and the segmentation readers
(`vision.datasets.segmentation`). Synthetic files cover the formats without the
shared datasets; the bundled datasets are checked when present.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from vision.datasets import segmentation as segdata
from vision.datasets.images import load_image
from vision.errors import UnsupportedFormatError
from vision.io import decode_image, read_image, to_uint8
from vision.paths import datasets_root
from vision.preprocess import convert_channels

_ORDER = {1: "GRAY", 3: "RGB"}


def _serving(path: Path, channels: int | None = None) -> np.ndarray:
    """What the server feeds its Preprocessor's resize, for a model with `channels`."""
    pixels = decode_image(path.read_bytes()).pixels
    return pixels if channels is None else convert_channels(pixels, _ORDER[channels])


def _assert_same(train: np.ndarray, serve: np.ndarray) -> None:
    assert train.dtype == serve.dtype and train.shape == serve.shape
    np.testing.assert_array_equal(train, serve)


# --- synthetic files: run without the datasets ---------------------------------------------


def _rng_image(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    return np.random.default_rng(0).integers(0, top + 1, size=shape).astype(dtype)


def _write(tmp_path: Path, name: str, pixels: np.ndarray, *params: int) -> Path:
    """Write with OpenCV (BGR order for colour arrays given as RGB)."""
    path = tmp_path / name
    bgr = pixels[..., ::-1] if pixels.ndim == 3 else pixels
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr), list(params))
    return path


SYNTHETIC = {
    "png-8-grey": ("a.png", (20, 30), np.uint8),
    "png-16-grey": ("b.png", (20, 30), np.uint16),
    "png-8-rgb": ("c.png", (20, 30, 3), np.uint8),
    "jpeg-rgb": ("d.jpg", (24, 32, 3), np.uint8),
    "jpeg-grey": ("e.jpg", (24, 32), np.uint8),
    "tiff-8-rgb": ("f.tif", (20, 30, 3), np.uint8),
    "tiff-16-grey": ("g.tif", (20, 30), np.uint16),
    "bmp-rgb": ("h.bmp", (20, 30, 3), np.uint8),
}


@pytest.mark.parametrize("key", sorted(SYNTHETIC))
def test_read_image_is_the_server_decoder(tmp_path: Path, key: str) -> None:
    name, shape, dtype = SYNTHETIC[key]
    path = _write(tmp_path, name, _rng_image(shape, dtype))
    pixels = read_image(path)
    _assert_same(pixels, _serving(path))
    assert pixels.dtype == dtype  # 16-bit kept
    assert pixels.shape[2] == (3 if len(shape) == 3 else 1)  # grey stays one channel


@pytest.mark.parametrize("key", ["png-8-grey", "png-8-rgb", "tiff-8-rgb", "bmp-rgb"])
def test_lossless_files_match_pil_in_rgb_order(tmp_path: Path, key: str) -> None:
    """The old PIL training path and the server agree where decoding is exact."""
    name, shape, dtype = SYNTHETIC[key]
    expected = _rng_image(shape, dtype)
    path = _write(tmp_path, name, expected)
    with PILImage.open(path) as im:
        pil = np.asarray(im)
    pil = pil[..., None] if pil.ndim == 2 else pil
    np.testing.assert_array_equal(read_image(path), pil)
    np.testing.assert_array_equal(read_image(path), expected.reshape(pil.shape))  # RGB order


@pytest.mark.parametrize("key", sorted(SYNTHETIC))
@pytest.mark.parametrize("channels", [1, 3])
def test_detection_reader_matches_serving(tmp_path: Path, key: str, channels: int) -> None:
    name, shape, dtype = SYNTHETIC[key]
    path = _write(tmp_path, name, _rng_image(shape, dtype))
    train = load_image(path, channels)
    serve = _serving(path, channels)
    assert train.dtype == np.uint8
    _assert_same(train, to_uint8(serve))
    if dtype == np.uint16:  # the server scales by 1/257 in float; uint8 rounds it
        scaled = serve.astype(np.float32) / np.float32(257.0)
        assert np.abs(train.astype(np.float32) - scaled).max() <= 0.5


def test_segmentation_folder_reader_matches_serving(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for key in ("png-8-grey", "jpeg-rgb", "tiff-8-rgb"):
        name, shape, dtype = SYNTHETIC[key]
        _write(images, name, _rng_image(shape, dtype))
        mask = np.zeros(shape[:2], np.uint8)
        mask[2:5, 3:9] = 255
        PILImage.fromarray(mask).save(masks / f"{Path(name).stem}.png")
    samples = segdata.load_folder(images, masks)
    assert len(samples) == 3
    for sample in samples:
        _assert_same(sample.image, _serving(Path(sample.path)))
        assert sample.mask.sum() == 18


def test_labels_are_read_as_labels(tmp_path: Path) -> None:
    """Palette PNG and GIF masks keep their indices (PIL); the server refuses GIF."""
    indices = np.zeros((6, 8), np.uint8)
    indices[1:3, 2:5] = 1
    palette = PILImage.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * (254 * 3))
    palette.save(tmp_path / "m.png")
    gif = PILImage.fromarray(indices * 255)
    gif.save(tmp_path / "m.gif", optimize=False)  # keep 0/255 as DRIVE masks have them
    np.testing.assert_array_equal(segdata._read(tmp_path / "m.png"), indices)
    np.testing.assert_array_equal(segdata._read(tmp_path / "m.gif") > 127, indices > 0)
    assert read_image(tmp_path / "m.png").shape == (6, 8, 3)  # an image decoder sees colours
    with pytest.raises(UnsupportedFormatError, match="GIF"):
        read_image(tmp_path / "m.gif")


# --- the bundled datasets: run where /work/shared/datasets (VISION_DATASETS) exists ----------

DATASETS = {
    "deeppcb": ("deeppcb", "PCBData/*/*/*_test.jpg"),
    "bccd": ("bccd", "BCCD/JPEGImages/*.jpg"),
    "drive": ("drive", "DRIVE/training/images/*.tif"),
    "magnetic-tile": ("magnetic-tile", "MT_*/Imgs/*.jpg"),
}


def _dataset_files(key: str, count: int = 4) -> tuple[Path, list[Path]]:
    folder, pattern = DATASETS[key]
    root = datasets_root() / folder
    if not root.is_dir():
        pytest.skip(f"shared dataset {root} is absent (set VISION_DATASETS to its parent)")
    files = sorted(root.glob(pattern))
    if not files:
        pytest.skip(f"no file matching {pattern} under {root}")
    random.Random(0).shuffle(files)
    return root, files[:count]


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_dataset_read_image_is_the_server_decoder(key: str) -> None:
    _, files = _dataset_files(key)
    for path in files:
        _assert_same(read_image(path), _serving(path))


@pytest.mark.parametrize("key", ["deeppcb", "bccd"])
def test_dataset_detection_reader_matches_serving(key: str) -> None:
    _, files = _dataset_files(key)
    for path in files:
        for channels in (1, 3):
            _assert_same(load_image(path, channels), _serving(path, channels))


def test_dataset_drive_reader_matches_serving() -> None:
    root, files = _dataset_files("drive", count=2)
    names = [p.stem.split("_")[0] for p in files]
    samples = segdata.load_drive(root / "DRIVE", "training", names=names)
    assert len(samples) == len(files)
    for sample in samples:
        _assert_same(sample.image, _serving(Path(sample.path)))
        assert sample.image.shape[2] == 3


def test_dataset_tile_reader_matches_serving() -> None:
    root, files = _dataset_files("magnetic-tile")
    samples = segdata.load_tile(root, [str(p.relative_to(root)) for p in files])
    for sample in samples:
        _assert_same(sample.image, _serving(Path(sample.path)))
        assert sample.image.shape[2] == 1
