"""The series decoder's fast path for uncompressed pixel data (`native_stored`, straight from
PixelData) gives exactly pydicom's values through the modality transform (`modality_frames`),
for each bit depth, signedness, unused high bits and rescale; other data takes pydicom's path."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from vision.io.dicom import _prepare, modality_frames
from vision.volume.series import _frames, native_stored


def _dataset(bits: int, stored: int, signed: int, slope, intercept, syntax, frames: int = 1):
    rng = np.random.default_rng(bits * 100 + stored + signed)
    dtype = np.dtype(f"{'ui'[signed]}{bits // 8}")
    info = np.iinfo(dtype)  # every bit pattern, the unused high bits included
    pixels = rng.integers(info.min, info.max, (frames, 6, 7), endpoint=True).astype(dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 6, 7, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = signed
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = pixels.astype(dtype.newbyteorder(">" if big else "<")).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


CASES = [
    (8, 8, 0),
    (8, 6, 0),
    (16, 16, 0),
    (16, 16, 1),
    (16, 12, 0),
    (16, 12, 1),
    (16, 11, 1),
]
RESCALES = [(None, None), (1, -1024), (1, 0), (2.5, -1000.25), (1, 0.5)]


@pytest.mark.parametrize(("bits", "stored", "signed"), CASES)
@pytest.mark.parametrize(("slope", "intercept"), RESCALES)
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_fast_path_equals_pydicom(bits, stored, signed, slope, intercept, syntax) -> None:
    ds = _dataset(bits, stored, signed, slope, intercept, syntax, frames=3)
    raw = native_stored(ds, _prepare(ds, 0))
    assert raw is not None
    assert np.array_equal(raw, ds.pixel_array)  # pydicom's stored values, high bits cleared
    fast = [values for _, values in _frames(ds)]
    general = list(modality_frames(ds))
    assert len(fast) == len(general) == 3
    for a, b in zip(fast, general, strict=True):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b)


def test_big_endian_takes_pydicoms_path() -> None:
    ds = _dataset(16, 12, 1, 1, -1024, ExplicitVRBigEndian)
    assert native_stored(ds, _prepare(ds, 0)) is None
    (values,) = [v for _, v in _frames(ds)]
    assert np.array_equal(values, next(modality_frames(ds)))


def test_truncated_pixel_data_is_still_refused() -> None:
    ds = _dataset(16, 16, 1, 1, 0, ExplicitVRLittleEndian)
    ds.PixelData = ds.PixelData[:-10]
    with pytest.raises(Exception, match="truncated"):
        list(_frames(ds))
