"""decode_frames: every frame of a multi-frame object, per-frame geometry and rescale / VOI."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.vision.dicom_files import make_dataset
from vision.errors import ImageTooLargeError
from vision.io import decode_dataset, decode_frames


def _item(**elements: object) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _enhanced(frames: int = 3) -> Dataset:
    """A 3-frame grey object with Enhanced CT-style shared and per-frame functional groups."""
    array = np.arange(frames * 4 * 5, dtype=np.uint16).reshape(frames, 4, 5) * 10
    ds = make_dataset(array, NumberOfFrames=frames)
    ds.SharedFunctionalGroupsSequence = Sequence(
        [
            _item(
                PixelMeasuresSequence=Sequence(
                    [_item(PixelSpacing=[0.5, 0.6], SliceThickness=2.0)]
                ),
                PlaneOrientationSequence=Sequence(
                    [_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]
                ),
                PixelValueTransformationSequence=Sequence(
                    [_item(RescaleSlope=1, RescaleIntercept=-100, RescaleType="HU")]
                ),
            )
        ]
    )
    per_frame = []
    for index in range(frames):
        groups = _item(
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=[0, 0, 2.0 * index])])
        )
        if index == 1:  # frame 2 has its own window
            groups.FrameVOILUTSequence = Sequence([_item(WindowCenter=200, WindowWidth=100)])
        per_frame.append(groups)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return ds


def test_every_frame_with_its_geometry() -> None:
    ds = _enhanced()
    images = decode_frames(ds)
    assert len(images) == 3
    assert [image.dicom.frames for image in images] == [(1,), (2,), (3,)]
    assert [image.dicom.image_position_patient for image in images] == [
        (0.0, 0.0, 0.0),
        (0.0, 0.0, 2.0),
        (0.0, 0.0, 4.0),
    ]
    for image in images:
        assert image.pixels.shape == (4, 5, 1) and image.pixels.dtype == np.float32
        assert image.pixel_spacing_mm == (0.5, 0.6)
        assert image.dicom.slice_thickness_mm == 2.0
        assert image.dicom.image_orientation_patient == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    # frames 1 and 3: no window, the full stored range (0..65535 - 100 after the shared
    # group's rescale) onto 0..255; frame 2: its own window on HU values.
    np.testing.assert_allclose(
        images[0].pixels[:, :, 0], ds.pixel_array[0] * (255 / 65535), rtol=1e-5
    )
    raw = ds.pixel_array[1].astype(np.float64) - 100  # the rescale of the shared group
    expected = np.clip((raw - (200 - 0.5)) / (100 - 1) + 0.5, 0, 1)  # PS3.3 linear window
    np.testing.assert_allclose(images[1].pixels[:, :, 0] / 255.0, expected, atol=0.02)


def test_pixel_limit_counts_every_frame() -> None:
    ds = _enhanced()
    with pytest.raises(ImageTooLargeError, match="3 frame"):
        decode_frames(ds, max_pixels=4 * 5 * 3 - 1)
    assert len(decode_frames(ds, max_pixels=4 * 5 * 3)) == 3


def test_real_multi_frame_files_decode_like_single_frames() -> None:
    rgb = pydicom.dcmread(get_testdata_file("SC_rgb_rle_2frame.dcm", download=False))
    images = decode_frames(rgb)
    assert len(images) == 2
    for index, image in enumerate(images):
        assert image.pixels.dtype == np.uint8 and image.pixels.shape == (100, 100, 3)
        np.testing.assert_array_equal(image.pixels, rgb.pixel_array[index])
    dose = pydicom.dcmread(get_testdata_file("rtdose.dcm", download=False))
    assert len(decode_frames(dose)) == 15


def test_single_frame_matches_decode_dataset() -> None:
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    (image,) = decode_frames(ct)
    np.testing.assert_array_equal(image.pixels, decode_dataset(ct).pixels)
    assert image.dicom.frames == (1,)
