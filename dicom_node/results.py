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

from dicom_node.gsps import annotations, presentation_states
from dicom_node.seg import heatmap_segmentations, mask_segmentations, one_seg_for_all
from dicom_node.sr import measurement_groups, report_of_groups
from dicom_node.uids import Producer, SourceFrame, unique_instances
from serving.dataplane import Prediction

__all__ = ["RESULT_CONTEXTS", "ResultStream", "build_results", "source_frames"]

# (SOP class, transfer syntax) of every kind of result built here, as written (Explicit VR Little
# Endian): SEG, Comprehensive 3D SR, Grayscale and Color Softcopy Presentation State, Parametric
# Map (`Outbox.warm` proposes them before the results exist)
RESULT_CONTEXTS = tuple(
    (sop_class, "1.2.840.10008.1.2.1")
    for sop_class in (
        "1.2.840.10008.5.1.4.1.1.66.4",
        "1.2.840.10008.5.1.4.1.1.88.34",
        "1.2.840.10008.5.1.4.1.1.11.1",
        "1.2.840.10008.5.1.4.1.1.11.2",
        "1.2.840.10008.5.1.4.1.1.30",
    )
)


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
    stream = ResultStream(model, version, labels, heatmaps=heatmaps, fractional=fractional)
    segmentations = stream.add(sources, predictions, frames) if sources else []
    return [*segmentations, *stream.finish()]


class ResultStream:
    """`build_results` in parts, so that a series' results are built while it is inferred.

    `add` takes the frames of one or more source instances (all the frames of each) and returns
    their SEG(s) and heat-map SEG(s), final objects that may be sent at once; it keeps their SR
    measurement groups and presentation-state annotations. `finish` returns the SR and the
    presentation state(s) of everything added. For sources whose frames make one SEG per
    instance (`streams`), adding instance by instance gives the objects `build_results` gives
    for all of them at once, in the same order.
    """

    def __init__(
        self,
        model: str,
        version: str,
        labels: Sequence[str],
        *,
        heatmaps: bool = False,
        fractional: bool = False,
    ) -> None:
        self.producer = Producer(model, version, tuple(labels))
        self.heatmaps, self.fractional = heatmaps, fractional
        self._frames: list[SourceFrame] = []
        self._segmentations: list[Dataset] = []
        self._groups: list = []
        self._drawn: list = []

    @staticmethod
    def streams(sources: Sequence[Dataset]) -> bool:
        """Whether `sources` (a series) get one SEG per instance, so may be added one by one."""
        instances = list({id(ds): _normalized(ds) for ds in sources}.values())
        return len(instances) <= 1 or not one_seg_for_all(instances)

    def add(
        self,
        sources: Sequence[Dataset],
        predictions: Sequence[Prediction],
        frames: Sequence[int] | None = None,
    ) -> list[Dataset]:
        """The SEG(s) and heat-map SEG(s) of these frames (see `build_results` for the inputs)."""
        if not sources:
            raise ValueError("no source instances: nothing to build results for")
        paired = source_frames(sources, predictions, frames)
        study = {str(item.dataset.StudyInstanceUID) for item in self._frames[:1] + paired}
        if len(study) > 1:
            raise ValueError("the sources belong to more than one study: build results per study")
        producer = self.producer
        segmentations = mask_segmentations(paired, producer, fractional=self.fractional)
        heat = heatmap_segmentations(paired, producer) if self.heatmaps else []
        self._groups += measurement_groups(paired, segmentations, producer)
        self._drawn += annotations(paired, producer)
        self._frames += paired
        self._segmentations += segmentations
        return [*segmentations, *heat]

    def finish(self) -> list[Dataset]:
        """The SR (TID 1500) and the presentation state(s) of every frame added."""
        if not self._frames:
            raise ValueError("no source instances: nothing to build results for")
        instances = unique_instances(self._frames)
        report = report_of_groups(instances, self._groups, self._segmentations, self.producer)
        return [report, *presentation_states(self._frames, self.producer, self._drawn)]
