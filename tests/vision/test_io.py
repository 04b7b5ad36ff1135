"""Decoding encoded images, DICOM files and raw buffers into `Image`."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLosslessSV1, RLELossless

from tests.vision.dicom_files import make_dicom
from vision.errors import ImageTooLargeError, InvalidInputError, UnsupportedFormatError
from vision.io import decode_dicom, decode_image, image_from_raw
from vision.paths import datasets_root

RNG = np.random.default_rng(0)


def _encode(ext: str, pixels: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(ext, pixels)
    assert ok
    return buffer.tobytes()


def _rgb_test_image(dtype: type = np.uint8) -> np.ndarray:
    """An RGB image whose left half is pure red, right half pure blue (max value)."""
    top = np.iinfo(dtype).max
    rgb = np.zeros((24, 40, 3), dtype=dtype)
    rgb[:, :20, 0] = top
    rgb[:, 20:, 2] = top
    return rgb


@pytest.mark.parametrize(
    ("ext", "fmt", "dtype"),
    [
        (".png", "png", np.uint8),
        (".png", "png", np.uint16),
        (".tif", "tiff", np.uint8),
        (".tif", "tiff", np.uint16),
        (".bmp", "bmp", np.uint8),
        (".jpg", "jpeg", np.uint8),
    ],
)
def test_colour_is_rgb_and_dtype_kept(ext: str, fmt: str, dtype: type) -> None:
    rgb = _rgb_test_image(dtype)
    image = decode_image(_encode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
    assert image.source_format == fmt
    assert image.pixels.shape == (24, 40, 3)
    assert image.pixels.dtype == dtype
    tolerance = 8 if fmt == "jpeg" else 0
    diff = np.abs(image.pixels[4:-4, 4:16].astype(int) - rgb[4:-4, 4:16].astype(int))
    assert diff.max() <= tolerance * (257 if dtype == np.uint16 else 1)


@pytest.mark.parametrize(
    ("ext", "dtype"),
    [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint8), (".tif", np.uint16)],
)
def test_grey_is_hxwx1_and_lossless(ext: str, dtype: type) -> None:
    grey = RNG.integers(0, np.iinfo(dtype).max, (17, 23), dtype=dtype)
    image = decode_image(_encode(ext, grey))
    assert image.pixels.shape == (17, 23, 1)
    assert image.pixels.dtype == dtype
    np.testing.assert_array_equal(image.pixels[:, :, 0], grey)


def test_grey_jpeg_and_alpha_dropped() -> None:
    assert decode_image(_encode(".jpg", np.full((8, 8), 90, np.uint8))).pixels.shape == (8, 8, 1)
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[..., 2] = 200  # red in BGR order
    bgra[..., 3] = 10
    pixels = decode_image(_encode(".png", bgra)).pixels
    assert pixels.shape == (5, 6, 3)
    assert tuple(pixels[0, 0]) == (200, 0, 0)


def test_empty_truncated_and_corrupt() -> None:
    with pytest.raises(InvalidInputError, match="empty image"):
        decode_image(b"")
    png = _encode(".png", RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="truncated"):
        decode_image(png[: len(png) // 2])
    jpeg = _encode(".jpg", RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="truncated"):
        decode_image(jpeg[: len(jpeg) // 2])
    corrupt = png[:40] + bytes(len(png) - 40 - 12) + png[-12:]
    with pytest.raises(InvalidInputError, match="corrupt"):
        decode_image(corrupt)


@pytest.mark.parametrize(
    "data", [b"GIF89a\x02\x00\x02\x00\x00\x00\x00;", b"hello, this is text", b"\x00" * 200]
)
def test_unsupported_formats_list_supported(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError, match="PNG, JPEG, TIFF"):
        decode_image(data)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp"])
def test_too_large(ext: str) -> None:
    data = _encode(ext, np.zeros((30, 50), np.uint8))
    with pytest.raises(ImageTooLargeError, match="50x30 = 1500 pixels; the limit is 1499"):
        decode_image(data, max_pixels=1499)
    assert decode_image(data, max_pixels=1500).pixels.shape == (30, 50, 1)


def test_too_large_checked_before_decoding_png() -> None:
    png = _encode(".png", np.zeros((30, 50), np.uint8))
    with pytest.raises(ImageTooLargeError):  # header only: the body is garbage
        decode_image(png[:33] + b"\x00" * 10, max_pixels=100)


# ---------------------------------------------------------------- DICOM

GREY16 = np.array([[0, 100], [200, 1000]], dtype=np.uint16)


def test_dicom_full_stored_range_without_window() -> None:
    """No window: 0..2^BitsStored-1 maps to 0..255, whatever the image holds (not min-max)."""
    image = decode_image(make_dicom(GREY16, BitsStored=10, HighBit=9))
    assert image.source_format == "dicom"
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (2, 2, 1)
    np.testing.assert_allclose(image.pixels[:, :, 0], GREY16 * (255 / 1023), rtol=1e-6)
    assert image.pixel_spacing_mm is None


def test_dicom_8_bit_keeps_its_values() -> None:
    grey = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(make_dicom(grey)).pixels[:, :, 0], grey)


def test_dicom_monochrome1_inverted_and_spacing() -> None:
    data = make_dicom(GREY16, "MONOCHROME1", BitsStored=10, HighBit=9, PixelSpacing=[0.5, 0.25])
    image = decode_image(data)
    np.testing.assert_allclose(image.pixels[:, :, 0], 255 - GREY16 * (255 / 1023), rtol=1e-6)
    assert image.pixel_spacing_mm == (0.5, 0.25)
    image = decode_image(make_dicom(GREY16, ImagerPixelSpacing=[0.1, 0.1]))
    assert image.pixel_spacing_mm == pytest.approx((0.1, 0.1))


def test_dicom_rescale_then_window() -> None:
    # stored 0, 100, 200, 1000 -> HU -1000, -800, -600, 1000; window -800 +- 200
    data = make_dicom(
        GREY16, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=-800, WindowWidth=400
    )
    pixels = decode_dicom(data).pixels[:, :, 0]
    assert pixels[0, 0] == 0.0
    assert pixels[0, 1] == pytest.approx(127.5, abs=1.0)
    assert pixels[1, 0] == 255.0
    assert pixels[1, 1] == 255.0
    # Unwindowed: the full stored range through the rescale, -1000..130070, onto 0..255.
    unwindowed = decode_dicom(data, window=False).pixels[:, :, 0]
    np.testing.assert_allclose(unwindowed, GREY16 * (255 / 65535), atol=1e-4)


def test_dicom_signed_window() -> None:
    ct = np.array([[-1000, 0], [40, 400]], dtype=np.int16)
    pixels = decode_image(make_dicom(ct, WindowCenter=40, WindowWidth=400)).pixels[:, :, 0]
    assert pixels[0, 0] == 0.0
    assert pixels[1, 0] == pytest.approx(127.5, abs=1.0)
    assert pixels[1, 1] == 255.0
    assert 0 < pixels[0, 1] < pixels[1, 0]


def test_dicom_rgb() -> None:
    rgb = _rgb_test_image()
    image = decode_image(make_dicom(rgb, "RGB"))
    assert image.pixels.dtype == np.uint8
    np.testing.assert_array_equal(image.pixels, rgb)


def test_dicom_rejections() -> None:
    frames = np.zeros((2, 4, 4), np.uint16)
    with pytest.raises(UnsupportedFormatError, match="multi-frame"):
        decode_image(make_dicom(frames, NumberOfFrames=2))
    with pytest.raises(ImageTooLargeError, match="2x2 = 4 pixels; the limit is 3"):
        decode_image(make_dicom(GREY16), max_pixels=3)
    data = make_dicom(GREY16)
    with pytest.raises(InvalidInputError, match="truncated"):
        decode_image(data[:-4])
    no_pixels = data[: data.rfind(b"\xe0\x7f\x10\x00")]  # cut at the PixelData tag
    with pytest.raises(InvalidInputError, match="no pixel data"):
        decode_image(no_pixels)


def test_dicom_compressed_transfer_syntaxes() -> None:
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8)
    ds = pydicom.dcmread(io.BytesIO(make_dicom(stored)))
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    pixels = decode_image(buffer.getvalue()).pixels[:, :, 0]
    np.testing.assert_allclose(pixels, stored * (255 / 65535), rtol=1e-5)
    if pydicom.pixels.get_decoder(JPEGLosslessSV1).is_available:
        return
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1  # no decoder installed for it
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(UnsupportedFormatError, match="cannot be decoded on this server"):
        decode_image(buffer.getvalue())


# ---------------------------------------------------------------- raw buffers


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((4, 5), "uint8"), ((4, 5, 1), "uint16"), ((4, 5, 3), "float32"), ((4, 5, 3), "uint8")],
)
def test_raw_round_trip(shape: tuple[int, ...], dtype: str) -> None:
    array = RNG.integers(0, 200, shape).astype(dtype)
    image = image_from_raw(array.tobytes(), shape, dtype)
    assert image.pixels.shape == (4, 5, shape[2] if len(shape) == 3 else 1)
    assert image.pixels.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(image.pixels.reshape(shape), array)
    assert image.source_format == "raw"


def test_raw_errors() -> None:
    with pytest.raises(InvalidInputError, match="needs 120 bytes"):
        image_from_raw(b"\x00" * 119, (4, 5, 3), "uint16")
    with pytest.raises(InvalidInputError, match="dtype"):
        image_from_raw(b"\x00" * 20, (4, 5), "int8")
    with pytest.raises(InvalidInputError, match="shape"):
        image_from_raw(b"\x00" * 40, (4, 5, 2), "uint8")
    with pytest.raises(ImageTooLargeError):
        image_from_raw(b"\x00" * 20, (4, 5), "uint8", max_pixels=19)
    nan = np.full((2, 2), np.nan, np.float32).tobytes()
    with pytest.raises(InvalidInputError, match="NaN"):
        image_from_raw(nan, (2, 2), "float32")


# ---------------------------------------------------------------- shared datasets

_DATASET_FILES = {
    "drive": ("drive", "DRIVE/training/images/*.tif", "tiff", 3),
    "deeppcb": ("deeppcb", "PCBData/*/*/*_test.jpg", "jpeg", None),
    "bccd": ("bccd", "BCCD/JPEGImages/*.jpg", "jpeg", 3),
    "magnetic-tile-jpg": ("magnetic-tile", "MT_*/Imgs/*.jpg", "jpeg", None),
    "magnetic-tile-png": ("magnetic-tile", "MT_*/Imgs/*.png", "png", 1),
}


@pytest.mark.parametrize("key", sorted(_DATASET_FILES))
def test_real_dataset_image(key: str) -> None:
    folder, pattern, fmt, channels = _DATASET_FILES[key]
    root = datasets_root() / folder
    if not root.is_dir():
        pytest.skip(f"shared dataset {root} is absent (set VISION_DATASETS to its parent)")
    path = next(iter(sorted(root.glob(pattern))), None)
    if path is None:
        pytest.skip(f"no file matching {pattern} under {root}")
    image = decode_image(path.read_bytes())
    assert image.source_format == fmt
    assert image.pixels.dtype == np.uint8
    assert image.height > 32 and image.width > 32
    assert image.pixels.shape[2] == channels if channels else image.pixels.shape[2] in (1, 3)
