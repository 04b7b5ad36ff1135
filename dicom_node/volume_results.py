"""Results of a volumetric model as DICOM: one multi-frame SEG and a TID 1500 SR with volumes.

`build_volume_results` takes the series' source instances and the `VolumePrediction` of the
volume assembled from them (`serving.volumes`): its `volume.source_frames` say which source
instance (and frame) each slice of the masks came from. It returns, in this order:

- one BINARY Segmentation (highdicom) with a segment per label found, one frame per source
  slice that has the segment (empty frames are left out), each frame referencing its source
  instance, in the sources' Frame of Reference with plane positions from the source slices;
  none when no label was found;
- one Comprehensive 3D SR (TID 1500): per label found, a volumetric ROI group on its SEG segment
  with the volume (SCT 118565006 "Volume", UCUM mm3), the voxel count and the mean score; and
  one group on the series saying, for each of the model's labels, whether it was found.

UIDs are derived from the sources, the model and version and the kind of result
(`dicom_node.uids`), so building again gives the same objects. Nothing here logs.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_node.seg import BACKGROUND, SEG_SERIES_NUMBER, property_codes, segment_description
from dicom_node.sr import ABSENT, NO_UNITS, PRESENT, PROCEDURE, SCORE, SR_SERIES_NUMBER
from dicom_node.uids import MANUFACTURER, Producer, derived_uid, result_uids
from serving.volumes import VolumePrediction
from vision.volume.types import VolumeMask

__all__ = ["VOLUME", "CUBIC_MM", "build_volume_results"]

VOLUME = Code("118565006", "SCT", "Volume")
CUBIC_MM = Code("mm3", "UCUM", "cubic millimeter")
VOXELS = Code("{voxels}", "UCUM", "voxels")


def _found(prediction: VolumePrediction) -> list[VolumeMask]:
    """The masks with voxels, background left out, in class order."""
    masks = [
        m
        for m in prediction.result.masks
        if m.label.lower() != BACKGROUND and m.voxel_count > 0 and m.mask.any()
    ]
    return sorted(masks, key=lambda m: (m.class_id, m.label))


def _planes(sources: Sequence[Dataset], prediction: VolumePrediction):
    """The SEG's source instances (in slice order), and the source plane of each volume slice."""
    frames = prediction.volume.source_frames
    depth = prediction.volume.shape[0]
    if len(frames) != depth:
        raise ValueError(
            f"the volume has {depth} slices but {len(frames)} source frames: build volume "
            "results from a volume assembled from the sources"
        )
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    missing = sorted({uid for uid, _ in frames} - set(by_uid))
    if missing:
        raise ValueError(f"{len(missing)} slice(s) of the volume come from no given source")
    uids = list(dict.fromkeys(uid for uid, _ in frames))
    instances = [by_uid[uid] for uid in uids]
    if len(instances) == 1 and "NumberOfFrames" in instances[0]:
        count = int(instances[0].NumberOfFrames)
        return instances, count, [frame - 1 for _, frame in frames]
    if any(frame != 1 for _, frame in frames):
        raise ValueError("slices from several multi-frame instances cannot share one SEG")
    return instances, len(instances), [uids.index(uid) for uid, _ in frames]


def volume_segmentation(
    sources: Sequence[Dataset], prediction: VolumePrediction, producer: Producer
) -> hd.seg.Segmentation | None:
    """The multi-frame SEG of the labels found (None when nothing was found)."""
    found = _found(prediction)
    if not found:
        return None
    instances, count, planes = _planes(sources, prediction)
    rows, columns = int(instances[0].Rows), int(instances[0].Columns)
    array = np.zeros((count, rows, columns, len(found)), dtype=np.uint8)
    for n, mask in enumerate(found):
        if mask.mask.shape[1:] != (rows, columns):
            raise ValueError(
                f"a mask of {mask.mask.shape[2]}x{mask.mask.shape[1]} voxels per slice on source "
                f"slices of {columns}x{rows}: masks must be on the source grid"
            )
        for k, plane in enumerate(planes):
            array[plane, :, :, n] |= mask.mask[k]
    series_uid, sop_uid = result_uids(instances, producer, "volume-seg")
    return hd.seg.Segmentation(
        source_images=instances,
        pixel_array=array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            segment_description(n + 1, m.label, producer) for n, m in enumerate(found)
        ],
        series_instance_uid=series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=producer.model[:64],
        software_versions=producer.software_version,
        device_serial_number=producer.version[:64],
        content_label="SEGMENTATION",
        content_description=f"3D masks of {producer.model}"[:64],
        series_description=f"{producer.model} segmentation"[:64],
    )


def _tracking(producer: Producer, series_uid: str, what: str) -> hd.sr.TrackingIdentifier:
    uid = derived_uid("volume-tracking", producer.model, producer.version, series_uid, what)
    return hd.sr.TrackingIdentifier(uid=uid, identifier=f"{what} (volume)"[:64])


def _measurement(name: Code, value: float, unit: Code, algorithm) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm)


def _volume_group(mask: VolumeMask, segment: int, seg: Dataset, series_uid: str, producer, alg):
    """The volumetric ROI group of one label: its SEG segment, volume, voxels and score."""
    referenced = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=segment,
        source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(producer, series_uid, mask.label),
        referenced_segment=referenced,
        finding_type=property_codes(mask.label)[1],
        algorithm_id=alg,
        measurements=[
            _measurement(VOLUME, mask.volume_mm3, CUBIC_MM, alg),
            _measurement(Code("VOXELS", "99VISION", "Voxel count"), mask.voxel_count, VOXELS, alg),
            _measurement(SCORE, mask.score, NO_UNITS, alg),
        ],
    )


def _presence_group(found: set[str], instances: Sequence[Dataset], series_uid, producer, alg):
    """Present / absent for each of the model's labels, on the source series."""
    labels = [lab for lab in producer.labels if lab.lower() != BACKGROUND] or sorted(found)
    evaluations = [
        hd.sr.QualitativeEvaluation(
            name=property_codes(lab)[1], value=PRESENT if lab in found else ABSENT
        )
        for lab in labels
    ]
    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in instances]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(producer, series_uid, "series"),
        algorithm_id=alg,
        source_images=sources,
        qualitative_evaluations=evaluations or None,
    )


def volume_report(
    sources: Sequence[Dataset],
    prediction: VolumePrediction,
    seg: Dataset | None,
    producer: Producer,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR with each found label's volume (mm³) on its SEG segment."""
    from dicom_node.sr import _observer  # the device observer of every report

    instances, _, _ = _planes(sources, prediction)
    series_uid = str(instances[0].SeriesInstanceUID)
    alg = hd.sr.AlgorithmIdentification(name=producer.model[:64], version=producer.version)
    found = _found(prediction)
    groups: list = [_presence_group({m.label for m in found}, instances, series_uid, producer, alg)]
    if seg is not None:
        numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
        groups += [
            _volume_group(m, numbers[m.label[:64]], seg, series_uid, producer, alg) for m in found
        ]
    report = hd.sr.MeasurementReport(
        observation_context=_observer(producer),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
        referenced_images=instances,
    )
    sr_series, sr_uid = result_uids(instances, producer, "volume-sr")
    return hd.sr.Comprehensive3DSR(
        evidence=[*instances, *([seg] if seg is not None else [])],
        content=report[0],
        series_instance_uid=sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sr_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"{producer.model} volumes"[:64],
    )


def build_volume_results(
    sources: Sequence[Dataset],
    prediction: VolumePrediction,
    model: str,
    version: str,
    labels: Sequence[str],
) -> list[Dataset]:
    """The SEG (when a label was found) and the SR of a volumetric prediction on `sources`.

    Raises ValueError when the prediction's slices do not come from `sources`.
    """
    if not sources:
        raise ValueError("no source instances: nothing to build results for")
    producer = Producer(model, version, tuple(labels))
    seg = volume_segmentation(sources, prediction, producer)
    report = volume_report(sources, prediction, seg, producer)
    return [*([seg] if seg is not None else []), report]
