"""What identifies a DICOM result: its source frames, the model that made it, and its UIDs.

Result UIDs are derived, never random: a name-based UUID (version 5, RFC 9562) of the source UIDs,
the model name and version and the kind of result, written as a UUID-derived UID
(`2.25.<integer>`, PS3.5 B.2). (`pydicom.uid.generate_uid(prefix=None, ...)` would not do: with no
prefix it ignores its entropy sources and returns a random UUID.) The same sources through the
same model version give the same SeriesInstanceUID and SOPInstanceUID, so a resent result
replaces itself in the archive instead of appearing twice; a new model version makes new objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from serving.dataplane import Prediction

# The namespace of every derived UID (a fixed, random UUID: never change it, or UIDs change).
_NAMESPACE = uuid.UUID("5d6c3e0a-8f51-4f5e-9b7a-2f1d0c4b7e93")
# Recorded as Manufacturer in every result and as the SR's device observer.
MANUFACTURER = "vision-serving"


@dataclass(frozen=True)
class Producer:
    """The model version a result comes from, and the labels it can find."""

    model: str
    version: str
    labels: tuple[str, ...] = ()

    @property
    def software_version(self) -> str:
        """SoftwareVersions of the results: `model version`."""
        return f"{self.model} {self.version}"[:64]


@dataclass(frozen=True)
class SourceFrame:
    """One source frame (1-based `frame` in `dataset`) and the prediction made for it."""

    dataset: Dataset
    frame: int
    prediction: Prediction

    @property
    def sop_instance_uid(self) -> str:
        """The source instance's SOPInstanceUID."""
        return str(self.dataset.SOPInstanceUID)

    @property
    def is_multiframe(self) -> bool:
        """Whether the source instance has a NumberOfFrames attribute (referenced by frame)."""
        return "NumberOfFrames" in self.dataset


def unique_instances(frames: Iterable[SourceFrame]) -> list[Dataset]:
    """The source datasets of `frames`, each instance once, in order of first appearance."""
    seen: dict[str, Dataset] = {}
    for item in frames:
        seen.setdefault(item.sop_instance_uid, item.dataset)
    return list(seen.values())


def derived_uid(*parts: str) -> str:
    """A deterministic `2.25.` UID from `parts` (order matters)."""
    name = "\x00".join(parts)
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def result_uids(
    sources: Sequence[Dataset], producer: Producer, kind: str, part: str = ""
) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the `kind` result (e.g. "seg") of `sources`.

    The series comes from the source series, model, version and kind; the instance also from
    every source SOPInstanceUID (sorted, so their order does not matter) and `part`, which tells
    apart several results of one kind (e.g. one SEG per source instance).
    """
    series = sorted({str(ds.SeriesInstanceUID) for ds in sources})
    instances = sorted({str(ds.SOPInstanceUID) for ds in sources})
    base = [producer.model, producer.version, kind]
    series_uid = derived_uid("series", *base, *series)
    return series_uid, derived_uid("instance", *base, part, *instances)
