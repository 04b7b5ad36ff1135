"""Results built instance by instance (`ResultStream`) are the objects `build_results` builds at
once; GSPS polylines written from raw bytes are the bytes highdicom writes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from highdicom import _standard_utils as highdicom_standard
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node import iod_lookups, sr
from dicom_node.gsps import _polyline
from dicom_node.results import ResultStream, build_results, source_frames
from dicom_node.seg import mask_segmentations
from dicom_node.uids import Producer
from tests.dicom_node.test_results import OP_8BIT, _masks, _prediction, _rgb_source
from vision.types import ClassMask, SegmentationResult

LABELS = ["background", "vessel"]


def _series(count: int) -> list[Dataset]:
    study, series = generate_uid(), generate_uid()
    sources = []
    for i in range(count):
        ds = _rgb_source(OP_8BIT, "OP", 32, 48, spacing=True)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, i + 1
        sources.append(ds)
    return sources


# set from the clock, or random (highdicom's dimension organization): blanked before comparing
_CLOCK = ("InstanceCreationTime", "ContentTime", "PresentationCreationTime", "ContributionDateTime")


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _stable(ds: Dataset) -> bytes:
    """`ds` written, its creation times and dimension organization UIDs blanked."""
    copy = pydicom.dcmread(io.BytesIO(_bytes(ds)))

    def blank(item: Dataset, _element: object) -> None:
        for keyword in _CLOCK:
            if keyword in item:
                setattr(item, keyword, "")
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = "1.2"

    copy.walk(blank)
    return _bytes(copy)


def test_instance_by_instance_gives_the_objects_built_at_once() -> None:
    sources = _series(3)
    predictions = [_prediction(ds, _masks(ds)) for ds in sources]
    empty = np.zeros((32, 48), bool)  # the last one finds nothing: no SEG, "absent" in the SR
    predictions[2] = _prediction(
        sources[2], SegmentationResult([ClassMask(0, "background", ~empty, 1.0)])
    )
    at_once = build_results(sources, predictions, "retina-vessels", "3", LABELS)
    assert ResultStream.streams(sources)
    stream = ResultStream("retina-vessels", "3", LABELS)
    parts = [stream.add([ds], [p]) for ds, p in zip(sources, predictions, strict=True)]
    assert [len(p) for p in parts] == [1, 1, 0]  # each SEG as soon as its instance is added
    streamed = [*parts[0], *parts[1], *stream.finish()]
    assert [str(ds.Modality) for ds in streamed] == ["SEG", "SEG", "SR", "PR"]
    assert [_stable(ds) for ds in streamed] == [_stable(ds) for ds in at_once]


def test_a_series_with_one_seg_for_all_frames_is_not_streamed() -> None:
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    second = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    second.SOPInstanceUID = generate_uid()
    second.ImagePositionPatient = [float(v) + 5.0 for v in ct.ImagePositionPatient]
    assert not ResultStream.streams([ct, second])  # one SEG for both slices
    assert ResultStream.streams([ct])


def test_stream_refuses_a_second_study_and_an_empty_finish() -> None:
    stream = ResultStream("retina-vessels", "3", LABELS)
    try:
        stream.finish()
    except ValueError as error:
        assert "nothing to build" in str(error)
    else:
        raise AssertionError("finish with nothing added was accepted")
    first, other = _series(1)[0], _series(1)[0]
    stream.add([first], [_prediction(first, _masks(first))])
    try:
        stream.add([other], [_prediction(other, _masks(other))])
    except ValueError as error:
        assert "more than one study" in str(error)
    else:
        raise AssertionError("a second study was accepted")


def _in_file(graphic: Dataset) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.2"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.3.4"
    ds.GraphicAnnotationSequence = [Dataset()]
    ds.GraphicAnnotationSequence[0].GraphicObjectSequence = [graphic]
    return _bytes(ds)


def test_raw_polyline_is_written_as_highdicom_writes_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    line = (rng.random((500, 2)) * 400).astype(np.float32)
    ours = _in_file(_polyline(line))
    theirs = _in_file(
        hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=line, units="PIXEL")
    )
    assert ours == theirs
    ours_graphic = _polyline(line)
    layer = hd.pr.GraphicLayer(layer_name="FINDINGS", order=1)
    image = _series(1)[0]
    image.Rows = image.Columns = 512
    hd.pr.GraphicAnnotation(
        referenced_images=[image], graphic_layer=layer, graphic_objects=[ours_graphic]
    )  # highdicom checks every point against the image...
    assert ours_graphic.get_item(0x00700022).is_raw  # ...without decoding the raw element
    path = tmp_path / "pr.dcm"
    path.write_bytes(ours)
    back = pydicom.dcmread(path).GraphicAnnotationSequence[0].GraphicObjectSequence[0]
    np.testing.assert_array_equal(np.array(back.GraphicData, np.float32).reshape(-1, 2), line)
    assert back.NumberOfGraphicPoints == 500


def _highdicom_report(sources, predictions, producer) -> tuple[Dataset, list[Dataset], list]:
    """highdicom's own document (the whole tree parsed and searched), the SEGs and the groups."""
    paired = source_frames(sources, predictions)
    segmentations = mask_segmentations(paired, producer)
    groups = sr.measurement_groups(paired, segmentations, producer)
    report = hd.sr.MeasurementReport(
        observation_context=sr._observer(producer),
        procedure_reported=sr.PROCEDURE,
        imaging_measurements=groups,
        referenced_images=sources,
    )
    document = hd.sr.Comprehensive3DSR(
        evidence=[*sources, *segmentations],
        content=report[0],
        **sr._document_fields(sources, producer),
    )
    return document, segmentations, groups


def test_the_sr_is_the_document_highdicom_builds() -> None:
    sources = _series(3)
    predictions = [_prediction(ds, _masks(ds)) for ds in sources]
    producer = Producer("retina-vessels", "3", tuple(LABELS))
    theirs, segmentations, groups = _highdicom_report(sources, predictions, producer)
    ours = sr.report_of_groups(sources, groups, segmentations, producer)
    assert _stable(ours) == _stable(theirs)
    read = hd.sr.srread(io.BytesIO(_bytes(ours)))
    assert len(read.content.get_planar_roi_measurement_groups()) == 3  # every mask's group
    assert len(ours.content.get_planar_roi_measurement_groups()) == 3  # the view parses it all
    prepared = sr.prepare_report(sources, segmentations, producer)
    prepared.fill(ours[0x0040A730].value[0])
    try:
        prepared.fill(ours[0x0040A730].value[0])
    except ValueError as error:
        assert "filled once" in str(error)
    else:
        raise AssertionError("a prepared document was filled twice")


def _outcome(lookup, *args: object) -> object:
    """`lookup(*args)`, or the type of what it raised (some IODs name modules that
    highdicom's tables lack: both versions raise KeyError for them)."""
    try:
        return lookup(*args)
    except KeyError as error:
        return type(error)


def test_memoised_iod_lookups_answer_as_highdicom_does() -> None:
    from highdicom._standard_utils import get_sop_class_iod_map

    assert highdicom_standard.is_attribute_in_iod is iod_lookups.is_attribute_in_iod  # installed
    keywords = ("ContentDate", "ContentTime", "NumberOfFrames", "PixelData", "FrameOfReferenceUID")
    answered = 0
    for sop_class in get_sop_class_iod_map():
        for keyword in keywords:
            for exclude in (None, ["IconImageSequence"]):
                original = _outcome(
                    iod_lookups.ORIGINAL_IS_ATTRIBUTE_IN_IOD, keyword, sop_class, exclude
                )
                assert (
                    _outcome(iod_lookups.is_attribute_in_iod, keyword, sop_class, exclude)
                    == original
                )
                answered += isinstance(original, bool)
        expected = _outcome(iod_lookups.ORIGINAL_DOES_IOD_HAVE_PIXEL_DATA, sop_class)
        assert _outcome(iod_lookups.does_iod_have_pixel_data, sop_class) == expected
    assert answered > 1000  # most classes have every module in highdicom's tables
    for lookup in (iod_lookups.is_attribute_in_iod, iod_lookups.ORIGINAL_IS_ATTRIBUTE_IN_IOD):
        try:
            lookup("ContentDate", "1.2.3.4.5")
        except KeyError as error:
            assert "No IOD found" in str(error)
        else:
            raise AssertionError("an unknown SOP class was answered")


def test_results_with_memoised_lookups_are_the_objects_highdicom_builds(monkeypatch) -> None:
    sources = _series(2)
    predictions = [_prediction(ds, _masks(ds)) for ds in sources]
    fast = build_results(sources, predictions, "retina-vessels", "3", LABELS)
    originals = {
        iod_lookups.is_attribute_in_iod: iod_lookups.ORIGINAL_IS_ATTRIBUTE_IN_IOD,
        iod_lookups.does_iod_have_pixel_data: iod_lookups.ORIGINAL_DOES_IOD_HAVE_PIXEL_DATA,
    }
    for name, module in list(sys.modules.items()):
        if module is not None and name.startswith("highdicom"):
            for attribute, value in list(vars(module).items()):
                if callable(value) and value in originals:
                    monkeypatch.setattr(module, attribute, originals[value])
    assert highdicom_standard.is_attribute_in_iod is iod_lookups.ORIGINAL_IS_ATTRIBUTE_IN_IOD
    plain = build_results(sources, predictions, "retina-vessels", "3", LABELS)
    assert [str(ds.Modality) for ds in fast] == ["SEG", "SEG", "SR", "PR"]
    assert [_stable(ds) for ds in fast] == [_stable(ds) for ds in plain]
