"""The findings as a Comprehensive 3D SR (TID 1500 Measurement Report, highdicom).

- each detection box: a planar ROI group (TID 1410), its region a closed SCOORD POLYLINE in
  the source image's pixel coordinates ((0, 0) the top left corner of the top left pixel), its
  score a measurement;
- each class mask: a planar ROI group referencing its SEG segment frame (or, with no SEG for the
  source, a TID 1501 group on the source image), its area in mm² (UCUM `mm2`) when the image has
  PixelSpacing, in pixels (UCUM `{pixels}`) otherwise, and its mean score;
- each source frame: a TID 1501 group whose qualitative evaluations say, for each label of the
  model, whether it was found (SCT Present / Absent), with the image-level score when the model
  has one;
- the model (name and version) as the device observer and as the algorithm of every group.
Scores use local codes (scheme `99VISION`): DICOM has no concept for a model's raw score.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_node.seg import BACKGROUND, SegmentRef, property_codes, segment_index
from dicom_node.uids import (
    MANUFACTURER,
    Producer,
    SourceFrame,
    derived_uid,
    result_uids,
    unique_instances,
)
from vision.io.dicom_header import read_header
from vision.types import ClassMask, Detection, DetectionResult, SegmentationResult

SR_SERIES_NUMBER = 902
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
AREA = Code("42798000", "SCT", "Area")
SQUARE_MM = Code("mm2", "UCUM", "square millimeter")
PIXELS = Code("{pixels}", "UCUM", "pixels")
NO_UNITS = Code("1", "UCUM", "no units")
SCORE = Code("SCORE", "99VISION", "Model score")
IMAGE_SCORE = Code("IMAGESCORE", "99VISION", "Image-level score")
PROCEDURE = Code("363679005", "SCT", "Imaging procedure")


def _frames_of(item: SourceFrame) -> list[int] | None:
    return [item.frame] if item.is_multiframe else None


def _tracking(item: SourceFrame, producer: Producer, what: str, n: int) -> hd.sr.TrackingIdentifier:
    uid = derived_uid("tracking", producer.model, producer.version, item.sop_instance_uid)
    return hd.sr.TrackingIdentifier(
        uid=derived_uid(uid, str(item.frame), what, str(n)),
        identifier=f"{what} {n} (frame {item.frame})"[:64],
    )


def _measurement(name: Code, value: float, unit: Code, algorithm: hd.sr.AlgorithmIdentification):
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm)


def _box_group(item, box: Detection, n: int, producer, algorithm):
    """The planar ROI group of one detection box."""
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    polyline = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polyline,
        source_image=hd.sr.SourceImageForRegion.from_source_image(item.dataset, _frames_of(item)),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(item, producer, box.label, n),
        referenced_region=region,
        finding_type=property_codes(box.label)[1],
        algorithm_id=algorithm,
        measurements=[_measurement(SCORE, box.score, NO_UNITS, algorithm)],
    )


def _area(item: SourceFrame, mask: ClassMask) -> tuple[float, Code]:
    spacing = item.prediction.image.pixel_spacing_mm or read_header(item.dataset).pixel_spacing_mm
    if spacing:
        return mask.pixel_area * spacing[0] * spacing[1], SQUARE_MM
    return float(mask.pixel_area), PIXELS


def _mask_group(item, mask: ClassMask, ref: SegmentRef | None, producer, algorithm):
    """The group of one class mask: planar ROI on its SEG segment, else TID 1501 on the image."""
    area, unit = _area(item, mask)
    measurements = [
        _measurement(AREA, area, unit, algorithm),
        _measurement(SCORE, mask.score, NO_UNITS, algorithm),
    ]
    common = {
        "tracking_identifier": _tracking(item, producer, mask.label, 1),
        "finding_type": property_codes(mask.label)[1],
        "algorithm_id": algorithm,
        "measurements": measurements,
    }
    if ref is None:
        source = hd.sr.SourceImageForMeasurementGroup.from_source_image(
            item.dataset, _frames_of(item)
        )
        return hd.sr.MeasurementsAndQualitativeEvaluations(source_images=[source], **common)
    segment = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=ref.segmentation.SOPClassUID,
        sop_instance_uid=ref.segmentation.SOPInstanceUID,
        frame_number=ref.frame_number,
        segment_number=ref.segment_number,
        source_image=hd.sr.SourceImageForSegmentation.from_source_image(
            item.dataset, _frames_of(item)
        ),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        referenced_segment=segment, **common
    )


def _found_labels(item: SourceFrame) -> set[str]:
    result = item.prediction.result
    if isinstance(result, DetectionResult):
        return {d.label for d in result.detections}
    return {m.label for m in result.masks if m.pixel_area > 0}


def _image_group(item: SourceFrame, producer: Producer, algorithm):
    """Present / absent for each of the model's labels, and the image-level score."""
    found = _found_labels(item)
    labels = [lab for lab in producer.labels if lab.lower() != BACKGROUND] or sorted(found)
    evaluations = [
        hd.sr.QualitativeEvaluation(
            name=property_codes(lab)[1], value=PRESENT if lab in found else ABSENT
        )
        for lab in labels
    ]
    result = item.prediction.result
    measurements = []
    if isinstance(result, SegmentationResult) and result.image_score is not None:
        measurements.append(_measurement(IMAGE_SCORE, result.image_score, NO_UNITS, algorithm))
    source = hd.sr.SourceImageForMeasurementGroup.from_source_image(item.dataset, _frames_of(item))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(item, producer, "image", 0),
        algorithm_id=algorithm,
        source_images=[source],
        qualitative_evaluations=evaluations or None,
        measurements=measurements or None,
    )


def _algorithm(producer: Producer) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=producer.model[:64], version=producer.version)


def measurement_groups(
    frames: Sequence[SourceFrame], segmentations: Sequence[Dataset], producer: Producer
) -> list:
    """The TID 1500 measurement groups of `frames`, in order (`measurement_report`'s content).

    `segmentations` are the SEGs with these frames' masks; groups built frame by frame and
    concatenated are the groups of all the frames (the report can be built in parts).
    """
    algorithm = _algorithm(producer)
    index = segment_index(segmentations)
    groups = []
    for item in frames:
        groups.append(_image_group(item, producer, algorithm))
        result = item.prediction.result
        if isinstance(result, DetectionResult):
            for n, box in enumerate(result.detections, start=1):
                groups.append(_box_group(item, box, n, producer, algorithm))
            continue
        for mask in result.masks:
            if mask.label.lower() != BACKGROUND and mask.pixel_area > 0:
                ref = index.get((item.sop_instance_uid, item.frame, mask.label[:64]))
                groups.append(_mask_group(item, mask, ref, producer, algorithm))
    return groups


def _observer(producer: Producer) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("device", producer.model, producer.version),
        name=producer.software_version,
        manufacturer_name=MANUFACTURER,
        model_name=producer.model[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def measurement_report(
    frames: Sequence[SourceFrame], segmentations: Sequence[Dataset], producer: Producer
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR of `frames`; `segmentations` are the SEGs its masks point at."""
    groups = measurement_groups(frames, segmentations, producer)
    return report_of_groups(unique_instances(frames), groups, segmentations, producer)


def report_of_groups(
    instances: Sequence[Dataset],
    groups: Sequence,
    segmentations: Sequence[Dataset],
    producer: Producer,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR of `measurement_groups` on `instances` (the sources, in order).

    The same dataset as `highdicom.sr.Comprehensive3DSR` with this content and every source and
    SEG as evidence, built faster (`PreparedReport`).
    """
    prepared = prepare_report(instances, segmentations, producer)
    report = hd.sr.MeasurementReport(
        observation_context=prepared.observer,
        procedure_reported=PROCEDURE,
        imaging_measurements=list(groups),
        referenced_images=list(instances),
    )
    return prepared.fill(report[0])


def _document_fields(instances: Sequence[Dataset], producer: Producer) -> dict[str, object]:
    """The SR document's own attributes (UIDs derived from the sources, series, manufacturer)."""
    series_uid, sop_uid = result_uids(instances, producer, "sr")
    return {
        "series_instance_uid": series_uid,
        "series_number": SR_SERIES_NUMBER,
        "sop_instance_uid": sop_uid,
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "is_complete": True,
        "series_description": f"{producer.model} findings"[:64],
    }


class PreparedReport:
    """An SR document built before its content: everything but the content tree, filled once.

    What the document holds besides its content tree comes from the sources, the producer and
    the SEGs its content references: patient and study, UIDs, flags, times, the evidence
    sequences.
    `prepare_report` builds it with highdicom on an empty TID 1500 root; `fill` then replaces the
    root's elements with the real root's (highdicom's own step: the document takes the root
    item's elements). Left out, against `highdicom.sr.Comprehensive3DSR` on the whole tree: its
    deep copy of the tree parsed back into content items (a check of what highdicom's content
    item constructors built and checked already) and its search of the tree for references
    missing from the evidence (the tree is built from these sources and SEGs, every one of
    them evidence); together about 70 % of a report's build time (one photograph's: 15 -> 5 ms).
    `tests/dicom_node/test_result_stream.py` compares the datasets with highdicom's.
    """

    def __init__(
        self,
        document: hd.sr.Comprehensive3DSR,
        root_tags: tuple[int, ...],
        observer: hd.sr.ObservationContext,
    ) -> None:
        self._document: hd.sr.Comprehensive3DSR | None = document
        self._root_tags = root_tags
        self.observer = observer  # for the content tree `fill` takes

    def fill(self, content: Dataset) -> hd.sr.Comprehensive3DSR:
        """The document with the root content item `content` (a `MeasurementReport`'s first
        item, built with `observer`); a document is filled once."""
        document, self._document = self._document, None
        if document is None:
            raise ValueError("a prepared SR document is filled once: prepare another")
        for tag in self._root_tags:
            del document[tag]
        for tag, element in content.items():  # shares the elements, as highdicom does
            document[tag] = element
        document.__class__ = _FilledReport
        document._content = None
        return document


class _FilledReport(hd.sr.Comprehensive3DSR):
    """A prepared document, filled: its `content` view is parsed when first read."""

    @property
    def content(self) -> hd.sr.ContentSequence:
        """The content tree (highdicom's view), parsed from the document on first use."""
        if self._content is None:
            self._content = hd.sr.Comprehensive3DSR.from_dataset(self).content
        return self._content


def prepare_report(
    instances: Sequence[Dataset], segmentations: Sequence[Dataset], producer: Producer
) -> PreparedReport:
    """The SR document of `instances` (the sources, in order) whose content will reference the
    SEGs `segmentations`, ready to be filled (`PreparedReport`)."""
    # the root item `MeasurementReport` makes, with no content (the document takes the root's
    # elements; `fill` puts the real root's in their place)
    root = hd.sr.ContainerContentItem(
        name=codes.cid7021.ImagingMeasurementReport, template_id="1500"
    )
    root.ContentSequence = hd.sr.ContentSequence()
    document = hd.sr.Comprehensive3DSR(
        evidence=[*instances, *segmentations],
        content=root,
        **_document_fields(instances, producer),
    )
    return PreparedReport(document, tuple(root.keys()), _observer(producer))
