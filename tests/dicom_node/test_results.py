"""Results as DICOM: SEG, SR and GSPS built from fake predictions on realistic sources."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.results import build_results
from serving.dataplane import Prediction
from tests.dicom_node.dcmtk_tools import tool_path
from vision.io.dicom_header import read_header
from vision.types import ClassMask, Detection, DetectionResult, Image, SegmentationResult
from vision.xai.explainer import Explanation

OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
VL_MICROSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.2"
PATIENT = "Doe^Jane"


def _rgb_source(sop_class: str, modality: str, rows: int, cols: int, spacing: bool) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        PATIENT,
        "P-1234",
        "19700101",
        "F",
    )
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240102", "101010", "A1", "S1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    ds.Manufacturer, ds.ContentDate, ds.ContentTime = "ACME", "20240102", "101010"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "00"
    if spacing:
        ds.PixelSpacing = [0.01, 0.02]
    ds.PixelData = np.zeros((rows, cols, 3), np.uint8).tobytes()
    return ds


def _image(ds: Dataset) -> Image:
    header = read_header(ds)
    pixels = np.zeros((ds.Rows, ds.Columns, int(ds.SamplesPerPixel)), np.uint8)
    return Image(pixels, "dicom", header.pixel_spacing_mm, header)


def _masks(ds: Dataset) -> SegmentationResult:
    vessel = np.zeros((ds.Rows, ds.Columns), bool)
    vessel[10:20, 5:30] = True
    background = ~vessel
    return SegmentationResult(
        [ClassMask(0, "background", background, 0.9), ClassMask(1, "vessel", vessel, 0.8)],
        image_score=0.42,
    )


def _boxes() -> DetectionResult:
    return DetectionResult(
        [Detection(4.0, 6.0, 20.0, 18.0, 0.91, 1, "RBC"), Detection(30, 2, 40, 12, 0.7, 2, "WBC")]
    )


def _prediction(ds: Dataset, result, version: str = "3") -> Prediction:
    return Prediction("retina-vessels", version, _image(ds), result)


def _kinds(results: list[Dataset]) -> dict[str, list[Dataset]]:
    out: dict[str, list[Dataset]] = {}
    for ds in results:
        out.setdefault(str(ds.Modality), []).append(ds)
    return out


def _roundtrip(ds: Dataset, tmp_path: Path) -> Path:
    path = tmp_path / f"{ds.Modality}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _dcmtk(tool: str, path: Path) -> str:
    if tool_path(tool) is None:
        pytest.skip(f"dcmtk's {tool} is not installed")
    done = subprocess.run([tool_path(tool), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _by_kind(results: list[Dataset], tmp_path: Path) -> dict[str, list[Path]]:
    paths: dict[str, list[Path]] = {}
    for ds in results:
        paths.setdefault(str(ds.Modality), []).append(_roundtrip(ds, tmp_path))
    return paths


def _area_measurement(report: hd.sr.MeasurementReport) -> hd.sr.Measurement:
    group = report.get_planar_roi_measurement_groups()[0]
    return next(m for m in group.get_measurements() if m.name.meaning == "Area")


def test_ophthalmic_masks_make_a_binary_seg_and_an_sr_in_mm2(tmp_path: Path) -> None:
    source = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
    source.NumberOfFrames = 1
    prediction = _prediction(source, _masks(source))
    results = build_results([source], [prediction], "retina-vessels", "3", ["background", "vessel"])
    paths = _by_kind(results, tmp_path)
    assert sorted(paths) == ["PR", "SEG", "SR"]

    seg = hd.seg.segread(paths["SEG"][0])
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert str(seg.PatientName) == PATIENT and seg.PatientID == "P-1234"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["vessel"]
    described = seg.get_segment_description(1)
    assert described.segmented_property_type.value == "59820001"  # SCT blood vessel
    assert described.algorithm_type.value == "AUTOMATIC"
    assert described.algorithm_identification[0].AlgorithmName == "retina-vessels"
    assert described.algorithm_identification[0].AlgorithmVersion == "3"
    assert seg.get_source_image_uids()[0][2] == source.SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_array_equal(pixels[0, :, :, 0] > 0, prediction.result.masks[1].mask)

    report = hd.sr.srread(paths["SR"][0]).content
    area = _area_measurement(report)
    assert area.unit.value == "mm2" and area.value == pytest.approx(250 * 0.01 * 0.02)
    roi = report.get_planar_roi_measurement_groups()[0]
    assert roi.reference_type.value == "121214"  # Referenced Segmentation Frame
    image_group = report.get_image_measurement_groups()[0]
    (evaluation,) = image_group.get_qualitative_evaluations()
    assert evaluation.value.value == "52101004"  # Present
    score = next(m for m in image_group.get_measurements() if m.name.value == "IMAGESCORE")
    assert score.value == pytest.approx(0.42)
    _dcmtk("dsrdump", paths["SR"][0])
    for path in (*paths["SEG"], *paths["PR"]):
        _dcmtk("dcmdump", path)


def test_without_pixel_spacing_areas_are_in_pixels(tmp_path: Path) -> None:
    source = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=False)  # NumberOfFrames left out
    results = build_results(
        [source], [_prediction(source, _masks(source))], "retina-vessels", "3", ["vessel"]
    )
    paths = _by_kind(results, tmp_path)
    area = _area_measurement(hd.sr.srread(paths["SR"][0]).content)
    assert area.unit.value == "{pixels}" and area.value == 250


def test_microscopy_boxes_are_sr_polylines_and_gsps_annotations(tmp_path: Path) -> None:
    source = _rgb_source(VL_MICROSCOPIC, "SM", 32, 48, spacing=False)
    labels = ["Platelets", "RBC", "WBC"]
    results = build_results([source], [_prediction(source, _boxes())], "blood-cells", "1", labels)
    paths = _by_kind(results, tmp_path)
    assert sorted(paths) == ["PR", "SR"]  # no mask, no SEG

    report = hd.sr.srread(paths["SR"][0]).content
    rois = report.get_planar_roi_measurement_groups()
    assert len(rois) == 2
    np.testing.assert_allclose(rois[0].roi.value, [[4, 6], [20, 6], [20, 18], [4, 18], [4, 6]])
    assert rois[0].roi.GraphicType == "POLYLINE"
    referenced = rois[0].roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert rois[0].finding_type.value == "41898006"  # SCT erythrocyte
    evaluations = report.get_image_measurement_groups()[0].get_qualitative_evaluations()
    assert [e.value.meaning for e in evaluations] == ["Absent", "Present", "Present"]

    pr = pydicom.dcmread(paths["PR"][0])
    assert pr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.2"  # colour softcopy PS
    annotation = pr.GraphicAnnotationSequence[0]
    assert annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert len(annotation.GraphicObjectSequence) == 2
    assert annotation.GraphicObjectSequence[0].GraphicData == [4, 6, 20, 6, 20, 18, 4, 18, 4, 6]
    assert [t.UnformattedTextValue for t in annotation.TextObjectSequence] == [
        "RBC 0.91",
        "WBC 0.70",
    ]
    _dcmtk("dcmpschk", paths["PR"][0])
    _dcmtk("dsrdump", paths["SR"][0])


def test_ct_masks_keep_the_frame_of_reference_and_a_grayscale_ps(tmp_path: Path) -> None:
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    mask = np.zeros((source.Rows, source.Columns), bool)
    mask[40:60, 50:70] = True
    result = SegmentationResult([ClassMask(1, "lesion", mask, 0.6)])
    prediction = Prediction("ct-lesions", "2", _image(source), result)
    results = build_results([source], [prediction], "ct-lesions", "2", ["lesion"])
    paths = _by_kind(results, tmp_path)
    seg = hd.seg.segread(paths["SEG"][0])
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    plane = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    assert list(plane.ImagePositionPatient) == list(source.ImagePositionPatient)
    described = seg.get_segment_description(1)
    assert described.segmented_property_category.value == "49755003"
    assert described.segmented_property_type.scheme_designator == "99VISION"
    pr = pydicom.dcmread(paths["PR"][0])
    assert pr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.11.1"  # grayscale softcopy PS
    spacing = [float(v) for v in source.PixelSpacing]
    area = _area_measurement(hd.sr.srread(paths["SR"][0]).content)
    assert area.value == pytest.approx(400 * spacing[0] * spacing[1])
    _dcmtk("dcmpschk", paths["PR"][0])


def test_result_uids_are_derived_from_sources_model_and_version() -> None:
    source = _rgb_source(VL_MICROSCOPIC, "SM", 32, 48, spacing=False)
    labels = ["RBC", "WBC"]

    def uids(version: str) -> list[tuple[str, str]]:
        built = build_results(
            [source], [_prediction(source, _boxes(), version)], "m", version, labels
        )
        return [(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)) for ds in built]

    first, again, other = uids("1"), uids("1"), uids("2")
    assert first == again
    assert all(uid.startswith("2.25.") for pair in first for uid in pair)
    assert not {u for pair in first for u in pair} & {u for pair in other for u in pair}
    assert len({u for pair in first for u in pair}) == 2 * len(first)


def test_multiframe_frames_are_referenced_by_number(tmp_path: Path) -> None:
    source = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
    source.NumberOfFrames = 2
    source.PixelData = np.zeros((2, 32, 48, 3), np.uint8).tobytes()
    predictions = [_prediction(source, DetectionResult()), _prediction(source, _boxes())]
    results = build_results([source, source], predictions, "m", "1", ["RBC", "WBC"])
    paths = _by_kind(results, tmp_path)
    report = hd.sr.srread(paths["SR"][0]).content
    roi = report.get_planar_roi_measurement_groups()[0]
    assert roi.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber == 2
    pr = pydicom.dcmread(paths["PR"][0])
    frames = [
        a.ReferencedImageSequence[0].ReferencedFrameNumber for a in pr.GraphicAnnotationSequence
    ]
    assert frames == [1, 2]
    texts = pr.GraphicAnnotationSequence[0].TextObjectSequence
    assert texts[0].UnformattedTextValue == "m 1: no findings"


def test_heat_maps_and_fractional_masks(tmp_path: Path) -> None:
    source = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
    prediction = _prediction(source, _masks(source))
    heat = np.tile(np.linspace(0.0, 1.0, 48, dtype=np.float32), (32, 1))
    prediction.explanations = [Explanation(1, "vessel", heat)]
    results = build_results(
        [source], [prediction], "retina-vessels", "3", ["vessel"], heatmaps=True, fractional=True
    )
    segs = [hd.seg.segread(p) for p in _by_kind(results, tmp_path)["SEG"]]
    assert [s.SegmentationType for s in segs] == ["FRACTIONAL", "FRACTIONAL"]
    masks, maps = segs
    assert maps.SeriesInstanceUID != masks.SeriesInstanceUID
    assert maps.SegmentSequence[0].SegmentLabel == "vessel heat map 1"
    assert maps.SegmentationFractionalType == "PROBABILITY"
    values = maps.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
    np.testing.assert_allclose(values[0, :, :, 0], heat, atol=1 / 255 + 1e-6)


def test_inputs_that_do_not_line_up_are_refused() -> None:
    source = _rgb_source(VL_MICROSCOPIC, "SM", 32, 48, spacing=False)
    with pytest.raises(ValueError, match="1 predictions for 2 sources"):
        build_results([source, source], [_prediction(source, _boxes())], "m", "1", [])
    wrong = SegmentationResult([ClassMask(1, "vessel", np.ones((8, 8), bool))])
    with pytest.raises(ValueError, match="results must be at the source image's size"):
        build_results([source], [_prediction(source, wrong)], "m", "1", [])


def test_nothing_identifying_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    source = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
    with caplog.at_level("DEBUG"):
        build_results([source], [_prediction(source, _masks(source))], "m", "1", ["vessel"])
    assert PATIENT not in caplog.text and "P-1234" not in caplog.text
    assert source.StudyInstanceUID not in caplog.text
