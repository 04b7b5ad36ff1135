"""The server's series path (`serving.volumes.assemble` of Part-10 instances): instances read up
to PixelData with the pixel data a view of their bytes (`vision.io.dicom_series.read_instance`),
what `dcmread` reads otherwise, voxels kept as integers where the values allow it
(`volume_from_datasets(keep_integers=True)`): the same volume values, the same preprocessed
tensor bit for bit, and every refusal of the series reader unchanged."""

from __future__ import annotations

import copy
import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from serving.volumes import VolumeSource, assemble, read_series
from tests.volume.test_integer_voxels import _config
from tests.volume.test_series import _refusals
from tests.volume.test_series import series as series  # noqa: F401 - the fixture
from vision.errors import InvalidInputError
from vision.io.dicom_header import read_header
from vision.io.dicom_series import PIXEL_DATA, read_instance
from vision.volume.pipeline import VolumePipeline
from vision.volume.series import volume_from_datasets

SHAPE = (5, 6, 7)  # slices, rows, columns


def _slice(k: int, bits: int, stored: int, signed: int, rescale, syntax, uids) -> Dataset:
    rng = np.random.default_rng(bits * 100 + stored * 10 + signed + k)
    dtype = np.dtype(f"{'ui'[signed]}{bits // 8}")
    info = np.iinfo(dtype)  # every bit pattern, the unused high bits included
    pixels = rng.integers(info.min, info.max, SHAPE[1:], endpoint=True).astype(dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.Modality, ds.InstanceNumber = "CT", k + 1
    ds.ImagePositionPatient = [-10.0, -12.0, 2.5 * k]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.8]
    ds.Rows, ds.Columns, ds.SamplesPerPixel = *SHAPE[1:], 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = signed
    if rescale[0] is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = pixels.astype(dtype.newbyteorder(">" if big else "<")).tobytes()
    return ds


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _series(bits=16, stored=12, signed=0, rescale=(1, -1024), syntax=ExplicitVRLittleEndian):
    uids = (generate_uid(), generate_uid(), generate_uid())
    slices = [_slice(k, bits, stored, signed, rescale, syntax, uids) for k in range(SHAPE[0])]
    return [_bytes(ds) for ds in slices[::-1]]  # not in position order


def _is_view(ds: Dataset) -> bool:
    return isinstance(ds.get_item(PIXEL_DATA, keep_deferred=True).value, memoryview)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_read_instance_is_dcmread_with_the_pixel_data_a_view(syntax) -> None:
    for data in _series(syntax=syntax):
        fast, full = read_instance(data), pydicom.dcmread(io.BytesIO(data))
        assert _is_view(fast) and not _is_view(full)
        assert set(fast.keys()) == set(full.keys())
        assert read_header(fast) == read_header(full)
        assert fast.file_meta.TransferSyntaxUID == syntax
        assert fast.original_encoding == full.original_encoding
        value = fast.get_item(PIXEL_DATA, keep_deferred=True).value
        assert bytes(value) == full.PixelData
        assert value.obj is data  # not copied


def _trailing(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 8)  # Data Set Trailing Padding after PixelData
    return _bytes(ds)


def _recoded(data: bytes, syntax) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    return _bytes(ds)


@pytest.mark.parametrize(
    ("syntax", "make"),
    [
        (ExplicitVRLittleEndian, _trailing),
        (ExplicitVRLittleEndian, lambda d: _recoded(d, RLELossless)),
        (ExplicitVRLittleEndian, lambda d: _recoded(d, DeflatedExplicitVRLittleEndian)),
        (ExplicitVRBigEndian, lambda d: d),
    ],
    ids=["element after PixelData", "RLE", "deflated", "big endian"],
)
def test_other_instances_are_read_by_dcmread(syntax, make) -> None:
    instances = _series(bits=16, stored=16, signed=1, rescale=(1, 0), syntax=syntax)
    changed = [make(d) for d in instances]
    for data in changed:
        ds = read_instance(data)
        assert not _is_view(ds)
        assert read_header(ds) == read_header(pydicom.dcmread(io.BytesIO(data)))
    expected = volume_from_datasets([pydicom.dcmread(io.BytesIO(d)) for d in instances])
    volume = assemble(VolumeSource(instances=tuple(changed)), 0)
    assert np.array_equal(volume.voxels, expected.voxels)


def test_unreadable_and_truncated_instances_are_refused_as_before() -> None:
    instances = _series()
    no_preamble = instances[:2] + [instances[2][132:]] + instances[3:]
    with pytest.raises(InvalidInputError, match="instance 2 of the series is not a readable"):
        read_series(no_preamble)
    truncated = instances[:1] + [instances[1][:-10]] + instances[2:]
    assert not _is_view(read_instance(truncated[1]))
    with pytest.raises(InvalidInputError, match="truncated"):
        assemble(VolumeSource(instances=tuple(truncated)), 0)


KEPT = [  # bits, stored, signed, (slope, intercept), the type kept (None: float32)
    (16, 16, 1, (None, None), "int16"),
    (16, 16, 1, (1, 0), "int16"),
    (16, 12, 0, (1, -1024), "int16"),  # the usual CT: 12 bits unsigned, intercept -1024
    (16, 12, 1, (1, -1024), "int16"),
    (16, 16, 0, (1, 0), "uint16"),
    (16, 16, 0, (1, -1024), None),  # 0..65535 - 1024 fits no 16-bit type
    (16, 16, 1, (1, -1024), None),  # -32768 - 1024 neither
    (16, 12, 0, (2, -1024), None),  # a slope
    (16, 12, 0, (1, 0.5), None),  # a fractional intercept
    (8, 8, 0, (None, None), "uint8"),
    (8, 8, 0, (1, -100), "int16"),
]


@pytest.mark.parametrize(("bits", "stored", "signed", "rescale", "kept"), KEPT)
def test_integers_kept_where_the_values_allow_and_equal_the_float32_volume(
    bits, stored, signed, rescale, kept
) -> None:
    instances = _series(bits, stored, signed, rescale)
    served = assemble(VolumeSource(instances=tuple(instances)), 0)
    before = volume_from_datasets([pydicom.dcmread(io.BytesIO(d)) for d in instances])
    assert before.voxels.dtype == np.float32
    assert served.voxels.dtype == np.dtype(kept or "float32")
    assert np.array_equal(served.voxels.astype(np.float32), before.voxels)
    assert (served.spacing_mm, served.origin_mm) == (before.spacing_mm, before.origin_mm)
    assert np.array_equal(served.direction, before.direction)
    assert served.slices == before.slices and served.source_frames == before.source_frames
    for normalisation in ("window", "zscore", "zscore_nonzero"):
        pipeline = VolumePipeline(_config(normalisation, (2.5, 1.0, 1.0)))
        tensor, meta = pipeline.preprocess(served)
        expected, expected_meta = pipeline.preprocess(before)
        assert meta == expected_meta and np.array_equal(tensor, expected)


def test_mixed_intercepts_kept_in_a_type_that_holds_them_all() -> None:
    instances = _series(16, 12, 0, (1, -1024))
    ds = pydicom.dcmread(io.BytesIO(instances[2]))
    ds.RescaleIntercept = 0
    instances[2] = _bytes(ds)
    served = assemble(VolumeSource(instances=tuple(instances)), 0)
    before = volume_from_datasets([pydicom.dcmread(io.BytesIO(d)) for d in instances])
    assert served.voxels.dtype == np.int16
    assert np.array_equal(served.voxels.astype(np.float32), before.voxels)


def test_refusals_through_the_served_path(series) -> None:  # noqa: F811 - the fixture
    for case, (datasets, message) in _refusals(series).items():
        instances = tuple(_bytes(copy.deepcopy(ds)) for ds in datasets)
        with pytest.raises(InvalidInputError, match=message):
            assemble(VolumeSource(instances=instances), 0)
        with pytest.raises(InvalidInputError, match=message):  # as the datasets are refused
            volume_from_datasets([pydicom.dcmread(io.BytesIO(d)) for d in instances])
        assert case
