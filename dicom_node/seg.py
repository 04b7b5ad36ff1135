"""Segmentation results (highdicom SEG): class masks as BINARY (or FRACTIONAL) segments, heat maps.

Segments are coded: the bundled models' labels map to SNOMED CT concepts (`CODED_LABELS`); any
other label is a "Morphologically altered structure" whose type is a local code (scheme `99VISION`,
PS3.16 8.2 private coding scheme) carrying the model's label.

Geometry: highdicom places frames from the source images. Sources with a patient coordinate
system (FrameOfReferenceUID) make one SEG for all their frames; sources without one (secondary
capture, many VL and ophthalmic photographs) make one SEG per source instance, highdicom's rule
for images without a Frame of Reference: the mask then matches the pixel matrix one to one. A
multi-frame source without a Frame of Reference cannot be segmented by highdicom; it gets no SEG
(the SR still carries its findings and areas).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_node import iod_lookups  # noqa: F401 - highdicom's IOD look-ups memoised
from dicom_node.uids import MANUFACTURER, Producer, SourceFrame, result_uids, unique_instances
from vision.types import SegmentationResult

_CATEGORY_ANATOMY = Code("91723000", "SCT", "Anatomical structure")
_CATEGORY_CELL = Code("4421005", "SCT", "Cell structure")
_CATEGORY_ALTERED = Code("49755003", "SCT", "Morphologically altered structure")
_RETINA = Code("5665001", "SCT", "Retina")

# label (lower case) -> (category, type, anatomic region or None)
CODED_LABELS: dict[str, tuple[Code, Code, Code | None]] = {
    "vessel": (_CATEGORY_ANATOMY, Code("59820001", "SCT", "Blood vessel"), _RETINA),
    "rbc": (_CATEGORY_CELL, Code("41898006", "SCT", "Erythrocyte"), None),
    "wbc": (_CATEGORY_CELL, Code("52501007", "SCT", "Leukocyte"), None),
    "platelets": (_CATEGORY_CELL, Code("16378004", "SCT", "Platelet"), None),
}
BACKGROUND = "background"
SEG_SERIES_NUMBER = 901
HEATMAP_SERIES_NUMBER = 904


def property_codes(label: str) -> tuple[Code, Code, Code | None]:
    """(category, type, anatomic region) of a label: SNOMED CT where known, else a local type."""
    known = CODED_LABELS.get(label.strip().lower())
    if known:
        return known
    value = (
        label
        if len(label) <= 16 and label.isascii()
        else hashlib.sha1(label.encode()).hexdigest()[:16]
    )
    return _CATEGORY_ALTERED, Code(value, "99VISION", label[:64] or "finding"), None


def segment_description(
    number: int, label: str, producer: Producer, coded_as: str | None = None
) -> hd.seg.SegmentDescription:
    """Segment `number` labelled `label`, coded as the label `coded_as` (default: `label`)."""
    category, kind, region = property_codes(coded_as or label)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=producer.model[:64],
            family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"),
            version=producer.version[:64],
        ),
        anatomic_regions=[region] if region else None,
    )


def one_seg_for_all(instances: Sequence[Dataset]) -> bool:
    """Whether the frames of `instances` make one SEG together (else one per instance)."""
    geometry = {
        (ds.SeriesInstanceUID, ds.Rows, ds.Columns, ds.get("FrameOfReferenceUID"))
        for ds in instances
    }
    spatial = all(hd.spatial.get_image_coordinate_system(ds) is not None for ds in instances)
    multiframe = any("NumberOfFrames" in ds for ds in instances)
    return spatial and len(geometry) == 1 and (len(instances) == 1 or not multiframe)


def segmentation_units(frames: Sequence[SourceFrame]) -> list[list[SourceFrame]]:
    """The groups of frames that make one SEG each (see the module docstring)."""
    if one_seg_for_all(unique_instances(frames)):
        return [list(frames)]
    by_instance: dict[str, list[SourceFrame]] = {}
    for item in frames:
        by_instance.setdefault(item.sop_instance_uid, []).append(item)
    return [group for group in by_instance.values() if _segmentable(group)]


def _segmentable(group: Sequence[SourceFrame]) -> bool:
    ds = group[0].dataset
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return frames == 1 or hd.spatial.get_image_coordinate_system(ds) is not None


class _NoPixelMeasures(Dataset):
    """A shared functional group with no pixel measures, which highdicom reads as None."""

    @property
    def PixelMeasuresSequence(self) -> None:  # noqa: N802 (the DICOM keyword)
        """None: the source has no PixelSpacing."""
        return None


def _metadata(ds: Dataset) -> Dataset:
    """`ds` as highdicom should read it as a SEG source (a copy sharing the elements if changed).

    highdicom reads a Pixel Measures item back only with SliceThickness, which 2D photographs
    lack: without a coordinate system and a SliceThickness, PixelSpacing is left out of the SEG
    (the SR carries the areas in mm²). Classic multi-frame images (Ophthalmic Photography, for
    one) get the SharedFunctionalGroupsSequence highdicom looks for.
    """
    spatial = hd.spatial.get_image_coordinate_system(ds) is not None
    drop = "PixelSpacing" in ds and "SliceThickness" not in ds and not spatial
    shared = "SharedFunctionalGroupsSequence" not in ds and hd.utils.is_multiframe_image(ds)
    if not drop and not shared:
        return ds
    copy = Dataset()
    copy.update(ds)
    if drop:
        del copy.PixelSpacing
    if shared:
        group = Dataset() if "PixelSpacing" in copy else _NoPixelMeasures()
        if "PixelSpacing" in copy:
            measures = Dataset()
            measures.PixelSpacing, measures.SliceThickness = ds.PixelSpacing, ds.SliceThickness
            group.PixelMeasuresSequence = [measures]
        copy.SharedFunctionalGroupsSequence = [group]
    return copy


def _planes(unit: Sequence[SourceFrame]) -> tuple[list[Dataset], dict[tuple[str, int], int]]:
    """The source datasets of a unit and the pixel-array plane of each (instance, frame)."""
    instances = unique_instances(unit)
    if "NumberOfFrames" in instances[0]:
        count = int(instances[0].NumberOfFrames)
        uid = str(instances[0].SOPInstanceUID)
        return instances, {(uid, f): f - 1 for f in range(1, count + 1)}
    return instances, {(str(ds.SOPInstanceUID), 1): i for i, ds in enumerate(instances)}


def _check_shape(array: np.ndarray, ds: Dataset) -> None:
    if array.shape != (int(ds.Rows), int(ds.Columns)):
        raise ValueError(
            f"a mask of {array.shape[1]}x{array.shape[0]} pixels on a source frame of "
            f"{ds.Columns}x{ds.Rows}: results must be at the source image's size"
        )


def mask_labels(unit: Sequence[SourceFrame]) -> list[str]:
    """The labels with a non-empty mask in `unit`, in class order (background left out)."""
    found: dict[str, int] = {}
    for item in unit:
        result = item.prediction.result
        if isinstance(result, SegmentationResult):
            for mask in result.masks:
                if mask.label.lower() != BACKGROUND and mask.pixel_area > 0:
                    found.setdefault(mask.label, mask.class_id)
    return sorted(found, key=lambda label: (found[label], label))


def _mask_array(unit: Sequence[SourceFrame], labels: list[str]) -> tuple[list[Dataset], np.ndarray]:
    instances, planes = _planes(unit)
    ds = instances[0]
    array = np.zeros((len(set(planes.values())), ds.Rows, ds.Columns, len(labels)), np.uint8)
    for item in unit:
        result = item.prediction.result
        if not isinstance(result, SegmentationResult):
            continue
        plane = planes[(item.sop_instance_uid, item.frame)]
        for mask in result.masks:
            if mask.label in labels:
                _check_shape(mask.mask, item.dataset)
                segment = array[plane, :, :, labels.index(mask.label)]
                segment |= mask.mask.astype(bool)
    return instances, array


def _segmentation(
    instances: list[Dataset],
    array: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    producer: Producer,
    kind: str,
    fractional: bool,
) -> hd.seg.Segmentation:
    series_uid, sop_uid = result_uids(instances, producer, kind)
    heat = kind == "heatmap"
    return hd.seg.Segmentation(
        source_images=[_metadata(ds) for ds in instances],
        pixel_array=array,
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=HEATMAP_SERIES_NUMBER if heat else SEG_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=int(instances[0].get("InstanceNumber") or 1) if len(instances) == 1 else 1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=producer.model[:64],
        software_versions=producer.software_version,
        device_serial_number=producer.version[:64],
        content_label="HEATMAP" if heat else "SEGMENTATION",
        content_description=f"{'Heat maps' if heat else 'Masks'} of {producer.model}"[:64],
        series_description=f"{producer.model} {'heat maps' if heat else 'segmentation'}"[:64],
    )


def mask_segmentations(
    frames: Sequence[SourceFrame], producer: Producer, fractional: bool = False
) -> list[hd.seg.Segmentation]:
    """One SEG per unit of `frames` with a mask found (none for units with nothing found)."""
    results = []
    for unit in segmentation_units(frames):
        labels = mask_labels(unit)
        if not labels:
            continue
        instances, array = _mask_array(unit, labels)
        descriptions = [segment_description(i + 1, lab, producer) for i, lab in enumerate(labels)]
        results.append(_segmentation(instances, array, descriptions, producer, "seg", fractional))
    return results


def heatmap_segmentations(
    frames: Sequence[SourceFrame], producer: Producer
) -> list[hd.seg.Segmentation]:
    """One FRACTIONAL SEG per source instance with heat maps: a segment per explained finding."""
    by_instance: dict[str, list[SourceFrame]] = {}
    for item in frames:
        if item.prediction.explanations:
            by_instance.setdefault(item.sop_instance_uid, []).append(item)
    results = []
    for unit in by_instance.values():
        if not _segmentable(unit):
            continue
        instances, planes = _planes(unit)
        maps = [(item, e) for item in unit for e in item.prediction.explanations]
        ds = instances[0]
        array = np.zeros((len(planes), ds.Rows, ds.Columns, len(maps)), np.float32)
        descriptions = []
        for k, (item, explanation) in enumerate(maps):
            _check_shape(explanation.heat, ds)
            plane = planes[(item.sop_instance_uid, item.frame)]
            array[plane, :, :, k] = np.clip(explanation.heat, 0.0, 1.0)
            label = f"{explanation.label} heat map {k + 1}"
            descriptions.append(segment_description(k + 1, label, producer, explanation.label))
        results.append(_segmentation(instances, array, descriptions, producer, "heatmap", True))
    return results


@dataclass(frozen=True)
class SegmentRef:
    """Where a source frame's segment lies in a SEG: the SEG, its frame and segment numbers."""

    segmentation: Dataset
    frame_number: int
    segment_number: int


def _group(seg: Dataset, item: Dataset, keyword: str) -> Dataset | None:
    """The first item of `keyword` in a per-frame group, else in the shared group."""
    for holder in (item, *seg.get("SharedFunctionalGroupsSequence", [])):
        if keyword in holder and holder[keyword].value:
            return holder[keyword].value[0]
    return None


def segment_index(segmentations: Sequence[Dataset]) -> dict[tuple[str, int, str], SegmentRef]:
    """(source SOPInstanceUID, source frame, segment label) -> where that segment frame is."""
    index: dict[tuple[str, int, str], SegmentRef] = {}
    for seg in segmentations:
        labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
        for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
            identification = _group(seg, item, "SegmentIdentificationSequence")
            derivation = _group(seg, item, "DerivationImageSequence")
            if identification is None or derivation is None:
                continue
            segment = int(identification.ReferencedSegmentNumber)
            source = derivation.SourceImageSequence[0]
            frame = int(source.get("ReferencedFrameNumber") or 1)
            key = (str(source.ReferencedSOPInstanceUID), frame, labels[segment])
            index[key] = SegmentRef(seg, number, segment)
    return index
