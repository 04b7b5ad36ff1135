"""DICOM objects a client can send that must be refused, before decoding, without their values.

Every malformed, absurd or non-finite attribute the decoder needs gets INVALID_ARGUMENT (or
RESOURCE_EXHAUSTED for sizes over the limits) with a message naming the attribute, never its
value; valid objects decode as pydicom's own windowing and lookup tables say.
"""

from __future__ import annotations

import io
import warnings
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.fuzz.dicom_bytes import PHI, grey_dicom, grey_elements, part10, us
from tests.vision.dicom_files import make_dataset, to_bytes
from vision.errors import ImageTooLargeError, InvalidInputError, UnsupportedFormatError
from vision.io import decode_dataset, decode_image
from vision.io.dicom_file import inflate

RNG = np.random.default_rng(5)


def _refused(data: bytes, error: type = InvalidInputError, match: str = "") -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(error, match=match) as refused:
            decode_image(data, max_pixels=1_000_000)
    message = str(refused.value)
    assert PHI not in message and not [w for w in caught if PHI in str(w.message)]
    assert refused.value.__cause__ is None  # pydicom's text is not carried along either
    return message


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"NumberOfFrames": ("IS", PHI)}, "NumberOfFrames is not an integer"),
        ({"Rows": ("US", us(4, 4))}, "Rows must hold one value"),
        ({"Rows": ("ZZ", us(4))}, "Rows is encoded with an unknown VR"),
        ({"Columns": ("US", us(1, 2, 3))}, "Columns must hold one value, not 3"),
        ({"BitsAllocated": ("US", 12)}, "BitsAllocated must be 1, 8, 16, 32 or 64"),
        ({"BitsStored": ("US", 9)}, r"BitsStored must lie in \[1, 8\]"),
        ({"SamplesPerPixel": ("US", 3)}, "SamplesPerPixel does not match"),
        ({"PixelRepresentation": ("US", 2)}, "PixelRepresentation"),
        ({"PhotometricInterpretation": ("CS", PHI)}, "PhotometricInterpretation is not one of"),
        ({"RescaleSlope": ("LO", PHI)}, "RescaleSlope is encoded with VR LO"),
        ({"RescaleSlope": ("DS", "inf")}, "RescaleSlope is not a finite number"),
        ({"RescaleSlope": ("DS", "0")}, "RescaleSlope must not be 0"),
        ({"RescaleIntercept": ("DS", "1e999")}, "RescaleIntercept is not a finite number"),
        ({"RescaleIntercept": ("DS", PHI)}, "RescaleIntercept is not a decimal number"),
        (
            {"WindowCenter": ("DS", "40"), "WindowWidth": ("DS", "0")},
            "WindowWidth must be at least 1",
        ),
        (
            {
                "WindowCenter": ("DS", "40"),
                "WindowWidth": ("DS", "9"),
                "VOILUTFunction": ("CS", PHI),
            },
            "VOILUTFunction must be LINEAR",
        ),
    ],
)
def test_malformed_attributes_are_named_not_echoed(overrides: dict, match: str) -> None:
    _refused(grey_dicom(bytes(16), 4, 4, **overrides), match=match)


def test_unknown_transfer_syntax_and_missing_or_short_pixel_data() -> None:
    _refused(part10(grey_elements(), PHI), UnsupportedFormatError, "not a transfer syntax")
    elements = grey_elements()
    del elements[(0x7FE0, 0x0010)]
    _refused(part10(elements), match="no pixel data")
    _refused(grey_dicom(bytes(14), 4, 4), match="truncated: 14 bytes, where")


def test_sizes_over_the_limits_are_refused_from_the_header() -> None:
    huge = grey_dicom(bytes(16), 4, 4, Rows=("US", 65535), Columns=("US", 65535))
    _refused(huge, ImageTooLargeError, "65535x65535")
    frames = grey_dicom(bytes(16), 4, 4, NumberOfFrames=("IS", "2147483647"))
    _refused(frames, ImageTooLargeError, "2147483647 frame")


def test_deflated_data_set_decodes_and_a_bomb_stops_at_the_limit() -> None:
    pixels = RNG.integers(0, 256, (6, 9), dtype=np.uint8)
    ds = make_dataset(pixels)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(decode_image(to_bytes(ds)).pixels[:, :, 0], pixels)
    bomb = part10(grey_elements(4, 4, bytes(32 * 1024 * 1024)), DeflatedExplicitVRLittleEndian)
    assert len(bomb) < 64 * 1024
    message = _refused(bomb, ImageTooLargeError, "inflates to more than")
    assert "--max-image-pixels" in message
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = packer.compress(bytes(32 * 1024 * 1024)) + packer.flush()
    with pytest.raises(ImageTooLargeError):
        inflate(stream, 1 << 20)
    assert inflate(stream[: len(stream)], 0)[:4] == bytes(4)  # 0: no limit


def test_compressed_frame_must_announce_rows_and_columns() -> None:
    import cv2

    from tests.fuzz.dicom_bytes import JPEG_BASELINE, encapsulated

    frame = cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))[1].tobytes()
    data = part10(grey_elements(8, 8, encapsulated([frame])), JPEG_BASELINE)
    _refused(data, match="does not announce the size Rows x Columns say")


def _windowed_like_pydicom(ds: Dataset) -> np.ndarray:
    """pydicom's modality LUT + VOI, mapped from its output range onto 0..255."""
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0)
    bits = ds.BitsStored
    lo, hi = (
        (0, 2**bits - 1)
        if ds.PixelRepresentation == 0
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    if "RescaleSlope" in ds:
        lo, hi = (
            lo * ds.RescaleSlope + ds.RescaleIntercept,
            hi * ds.RescaleSlope + ds.RescaleIntercept,
        )
    return (values - lo) * (255.0 / (hi - lo))


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_windows_match_pydicom(function: str) -> None:
    ct = RNG.integers(0, 4096, (9, 11), dtype=np.uint16)
    ds = make_dataset(ct, BitsStored=12, HighBit=11, RescaleSlope=1, RescaleIntercept=-1024)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, function
    ours = decode_dataset(ds).pixels[:, :, 0]
    np.testing.assert_allclose(ours, _windowed_like_pydicom(ds), atol=1e-3)


def test_modality_and_voi_lookup_tables() -> None:
    """PS3.3 C.11.1: values below the first mapped one take entry 0, above the last the last."""
    stored = RNG.integers(0, 300, (5, 7), dtype=np.uint16)
    ds = make_dataset(stored, BitsStored=12, HighBit=11)
    table = np.linspace(0, 4000, 256).astype(np.uint16)
    lut = Dataset()
    lut.LUTDescriptor = [256, 10, 16]
    lut.LUTData = table.tobytes()
    ds.ModalityLUTSequence = Sequence([lut])
    expected = table[np.clip(stored.astype(int) - 10, 0, 255)] * (255.0 / 65535.0)
    np.testing.assert_allclose(decode_dataset(ds).pixels[:, :, 0], expected, atol=1e-3)
    reread = decode_image(to_bytes(ds)).pixels[:, :, 0]  # the same from the file's bytes
    np.testing.assert_allclose(reread, expected, atol=1e-3)
    voi = Dataset()
    voi.LUTDescriptor = [4096, 0, 8]
    voi.LUTData = (np.arange(4096) // 16).astype(np.uint16).tobytes()
    plain = make_dataset(stored, BitsStored=12, HighBit=11)
    plain.VOILUTSequence = Sequence([voi])
    looked_up = (stored.astype(int) // 16) * (255 / 255)  # entries span 0..255
    np.testing.assert_allclose(decode_dataset(plain).pixels[:, :, 0], looked_up, atol=1e-4)


def test_malformed_modality_lut_is_refused() -> None:
    stored = np.zeros((2, 2), np.uint16)
    ds = make_dataset(stored)
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.LUTData = np.array([1, 2], np.uint16).tobytes()  # two of the four entries
    ds.ModalityLUTSequence = Sequence([lut])
    with pytest.raises(InvalidInputError, match="LUTData must hold the 4 entries"):
        decode_image(to_bytes(ds))


def test_in_memory_dataset_values_are_checked_too() -> None:
    ds = make_dataset(np.zeros((2, 2), np.uint8), RescaleSlope=1, RescaleIntercept=0)
    ds.RescaleSlope = float("nan")
    with pytest.raises(InvalidInputError, match="RescaleSlope is not a finite number"):
        decode_dataset(ds)
    assert pydicom.dcmread(io.BytesIO(to_bytes(make_dataset(np.zeros((2, 2), np.uint8)))))


def test_a_frame_that_aborts_gdcm_kills_only_its_own_process() -> None:
    """python-gdcm calls std::terminate on this frame; it is decoded by another plugin, and
    GDCM (the only JPEG Lossless decoder here) runs in a process of its own."""
    from tests.fuzz.reproducers import GDCM_ABORT
    from vision.io import dicom_codecs
    from vision.io.dicom_file import read_part10
    from vision.io.dicom_pixels import pixel_dataset, read_pixel_module

    ds = read_part10(GDCM_ABORT)
    module = read_pixel_module(ds)
    assert dicom_codecs.plugin_for(module.syntax) != "gdcm"
    with pytest.raises(InvalidInputError, match="crashed the decoder"):
        list(dicom_codecs._isolated(pixel_dataset(ds, module), "gdcm"))
    pixels = (np.arange(16 * 24).reshape(16, 24) % 200).astype(np.uint8)
    ds = make_dataset(pixels)
    ds.compress(pydicom.uid.JPEGLSLossless)
    clean = pixel_dataset(ds, read_pixel_module(ds))
    (frame,) = dicom_codecs._isolated(clean, "gdcm")  # a new process serves the next frame
    np.testing.assert_array_equal(frame, pixels)
