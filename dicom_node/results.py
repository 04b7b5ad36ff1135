"""Results as DICOM: the predictions of one series through one model as SEG, SR and GSPS objects.

`build_results` takes the source instances and, aligned with them, one prediction per source
frame. A single-frame instance appears once; a multi-frame instance appears once per predicted
frame (the same dataset repeated), its k-th appearance being frame k unless `frames` says which
1-based frame each prediction is for. It returns, in this order:

- the Segmentation(s) of the class masks (`dicom_node.seg`: BINARY, or FRACTIONAL with
  `fractional=True`), none when no mask has a pixel;
- with `heatmaps=True`, the Grad-CAM heat maps as FRACTIONAL SEG(s), a segment per explained
  finding;
- one Comprehensive 3D SR (TID 1500, `dicom_node.sr`) with every finding;
- one presentation state per source series (`dicom_node.gsps`) with boxes, outlines and labels.

Every result is in the sources' Study, with their Patient and Study attributes (highdicom copies
them from the first source) and their Frame of Reference where they have one; its UIDs are
derived from the source UIDs, the model name and version and the kind of result
(`dicom_node.uids`), so building again gives the same objects. Nothing here logs.
"""

from __future__ import annotations

from collections.abc import Sequence

from highdicom.utils import is_multiframe_image
from pydicom.dataset import Dataset

from dicom_node.gsps import presentation_states
from dicom_node.seg import heatmap_segmentations, mask_segmentations
from dicom_node.sr import measurement_report
from dicom_node.uids import Producer, SourceFrame
from serving.dataplane import Prediction

__all__ = ["build_results", "source_frames"]


def source_frames(
    sources: Sequence[Dataset],
    predictions: Sequence[Prediction],
    frames: Sequence[int] | None = None,
) -> list[SourceFrame]:
    """Pair each prediction with its source instance and 1-based frame number (see the module)."""
    if len(sources) != len(predictions) or (frames is not None and len(frames) != len(sources)):
        raise ValueError(
            f"{len(predictions)} predictions for {len(sources)} sources"
            + ("" if frames is None else f" and {len(frames)} frame numbers")
            + ": give one source (and frame) per prediction"
        )
    if len({str(ds.StudyInstanceUID) for ds in sources}) > 1:
        raise ValueError("the sources belong to more than one study: build results per study")
    seen: dict[str, int] = {}
    normalized: dict[int, Dataset] = {}
    paired = []
    for i, (source, prediction) in enumerate(zip(sources, predictions, strict=True)):
        ds = normalized.setdefault(id(source), _normalized(source))
        uid = str(ds.SOPInstanceUID)
        seen[uid] = seen.get(uid, 0) + 1
        frame = int(frames[i]) if frames is not None else seen[uid]
        count = int(ds.get("NumberOfFrames", 1) or 1)
        if not 1 <= frame <= count:
            raise ValueError(f"prediction {i} is for frame {frame} of an instance of {count}")
        paired.append(SourceFrame(ds, frame, prediction))
    return paired


def _normalized(ds: Dataset) -> Dataset:
    """`ds`, or for a multi-frame IOD without NumberOfFrames (Type 1) a copy saying 1 frame.

    highdicom reads NumberOfFrames for every image of a multi-frame IOD (Ophthalmic Photography,
    for one); some devices leave it out of single-frame images. The copy shares the elements.
    """
    if "NumberOfFrames" in ds or not is_multiframe_image(ds):
        return ds
    copy = Dataset()
    copy.update(ds)
    if hasattr(ds, "file_meta"):
        copy.file_meta = ds.file_meta
    copy.NumberOfFrames = 1
    return copy


def build_results(
    sources: Sequence[Dataset],
    predictions: Sequence[Prediction],
    model: str,
    version: str,
    labels: Sequence[str],
    *,
    heatmaps: bool = False,
    fractional: bool = False,
    frames: Sequence[int] | None = None,
) -> list[Dataset]:
    """The SEG(s), heat map SEG(s), SR and presentation state(s) of `predictions` on `sources`.

    `labels` are the model's labels (the SR says for each whether it was found); `frames`, when
    given, the 1-based source frame of each prediction. Raises ValueError when the inputs do not
    line up (counts, studies, frame numbers, mask sizes).
    """
    if not sources:
        raise ValueError("no source instances: nothing to build results for")
    producer = Producer(model, version, tuple(labels))
    paired = source_frames(sources, predictions, frames)
    segmentations = mask_segmentations(paired, producer, fractional=fractional)
    heat = heatmap_segmentations(paired, producer) if heatmaps else []
    report = measurement_report(paired, segmentations, producer)
    return [*segmentations, *heat, report, *presentation_states(paired, producer)]
