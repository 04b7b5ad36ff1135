"""`dicom_node.writer.file_bytes` writes the bytes pydicom writes, for every kind of result."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from dicom_node.results import build_results
from dicom_node.writer import UnsupportedError, body_bytes, file_bytes
from serving.dataplane import Prediction
from tests.dicom_node.test_results import (
    OP_8BIT,
    VL_MICROSCOPIC,
    _boxes,
    _image,
    _masks,
    _prediction,
    _rgb_source,
)
from vision.types import ClassMask, DetectionResult, SegmentationResult
from vision.xai.explainer import Explanation


def _pydicom(ds: Dataset) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _assert_same(results: list[Dataset]) -> None:
    assert results
    for ds in results:
        body_bytes(ds)  # the fast path, no fallback
        assert file_bytes(ds) == _pydicom(ds), ds.Modality


def test_ophthalmic_masks_with_heat_maps() -> None:
    source = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
    prediction = _prediction(source, _masks(source))
    heat = np.tile(np.linspace(0.0, 1.0, 48, dtype=np.float32), (32, 1))
    prediction.explanations = [Explanation(1, "vessel", heat)]
    labels = ["background", "vessel"]
    _assert_same(build_results([source], [prediction], "retina-vessels", "3", labels))
    fractional = build_results(
        [source], [prediction], "retina-vessels", "3", labels, heatmaps=True, fractional=True
    )
    assert [str(ds.Modality) for ds in fractional] == ["SEG", "SEG", "SR", "PR"]
    _assert_same(fractional)


def test_microscopy_boxes_and_multiframe_sources() -> None:
    source = _rgb_source(VL_MICROSCOPIC, "SM", 32, 48, spacing=False)
    _assert_same(build_results([source], [_prediction(source, _boxes())], "m", "1", ["RBC"]))
    frames = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
    frames.NumberOfFrames = 2
    frames.PixelData = np.zeros((2, 32, 48, 3), np.uint8).tobytes()
    predictions = [_prediction(frames, DetectionResult()), _prediction(frames, _boxes())]
    _assert_same(build_results([frames, frames], predictions, "m", "1", ["RBC", "WBC"]))


def test_a_ct_read_from_an_implicit_vr_file() -> None:
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # raw elements, implicit VR
    mask = np.zeros((source.Rows, source.Columns), bool)
    mask[40:60, 50:70] = True
    prediction = Prediction(
        "ct-lesions", "2", _image(source), SegmentationResult([ClassMask(1, "lesion", mask, 0.6)])
    )
    _assert_same(build_results([source], [prediction], "ct-lesions", "2", ["lesion"]))


def test_patient_attributes_outside_ascii() -> None:
    source = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
    source.SpecificCharacterSet = "ISO_IR 192"
    source.PatientName = "Müller^Jörg"
    source.StudyID = "Ärztin"
    results = build_results(
        [source], [_prediction(source, _masks(source))], "retina-vessels", "3", ["vessel"]
    )
    assert "Müller" in str(results[0].PatientName)
    _assert_same(results)


def _plain(sop_instance: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", sop_instance
    ds.PatientName = "Doe^Jane"
    return ds


def test_what_is_not_done_here_falls_back_to_pydicom() -> None:
    ambiguous = _plain(generate_uid())
    ambiguous.PixelRepresentation = 0
    ambiguous.add_new(0x00280106, "US or SS", 7)  # Smallest Image Pixel Value
    with pytest.raises(UnsupportedError):
        body_bytes(ambiguous)
    assert file_bytes(ambiguous) == _pydicom(ambiguous)
    implicit = _plain(generate_uid())
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert file_bytes(implicit) == _pydicom(implicit)
    long_short_text = _plain(generate_uid())
    long_short_text.ImageComments = "x" * 70_000  # LT: a 16-bit length, pydicom writes UN
    with pytest.raises(UnsupportedError):
        body_bytes(long_short_text)
    with pytest.warns(UserWarning):
        assert file_bytes(long_short_text) == _pydicom(long_short_text)
