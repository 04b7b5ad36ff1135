"""Burned-in text: which objects are refused, and blanking the regions configured for them.

An object is refused (`DeidRefusedError`) when BurnedInAnnotation is YES, or its Modality is one
known to carry burned-in identification (`BURNED_IN_MODALITIES`), or it is a Secondary Capture
(SOP Class 1.2.840.10008.5.1.4.1.1.7*, screen captures) - unless a configured region rule matches
it (modality / SOP class / rows x columns): then those boxes are zeroed in every frame and sample
and BurnedInAnnotation becomes NO. Compressed pixel data is decoded, blanked and written back
uncompressed (Explicit VR Little Endian; YBR colour converted to RGB); the report says so.
Encapsulated documents (DOC, Encapsulated PDF/CDA/STL...) are always refused: their content is not
pixels a region could clean.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from vision.errors import ConfigError, VisionError

# Modalities whose images commonly carry burned-in patient text (PS3.15 E.3.1 Clean Pixel Data
# Option names ultrasound, screen captures and photographs; DICOM's Modality defined terms).
BURNED_IN_MODALITIES = {
    "US": "ultrasound (patient and exam text is often burned into the image)",
    "IVUS": "intravascular ultrasound (burned-in text)",
    "SC": "secondary capture (screen captures carry burned-in text)",
    "OT": "modality OT (other: unknown provenance, often screen captures)",
    "ES": "endoscopy (video overlays with patient text)",
    "XC": "external-camera photography (may show faces, wristbands, labels)",
}
DOCUMENT_MODALITIES = {"DOC"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_DOCUMENT = "1.2.840.10008.5.1.4.1.1.104."


class DeidRefusedError(VisionError):
    """An object cannot be de-identified safely as configured (the message says why and how)."""


@dataclass(frozen=True)
class RegionRule:
    """Boxes [x1, y1, x2, y2] (pixels; x2, y2 exclusive) to blank in matching objects."""

    boxes: tuple[tuple[int, int, int, int], ...]
    modality: str | None = None
    sop_class_uid: str | None = None
    rows: int | None = None
    columns: int | None = None

    def matches(self, ds: Dataset) -> bool:
        """Whether every criterion the rule gives holds for `ds`."""
        wanted = {
            "Modality": self.modality,
            "SOPClassUID": self.sop_class_uid,
            "Rows": self.rows,
            "Columns": self.columns,
        }
        return all(v is None or str(ds.get(k, "")) == str(v) for k, v in wanted.items())

    @property
    def specificity(self) -> int:
        """How many criteria the rule gives (the most specific matching rule wins)."""
        return sum(
            v is not None for v in (self.modality, self.sop_class_uid, self.rows, self.columns)
        )


@dataclass(frozen=True)
class Regions:
    """The region rules of a `--regions` file (JSON or YAML: `regions: [rule, ...]`)."""

    rules: tuple[RegionRule, ...] = field(default_factory=tuple)

    def match(self, ds: Dataset) -> RegionRule | None:
        """The most specific rule matching `ds`, or None."""
        found = [r for r in self.rules if r.matches(ds)]
        return max(found, key=lambda r: r.specificity) if found else None

    @classmethod
    def load(cls, path: Path) -> Regions:
        """Rules from a file; a ConfigError that names the fix for anything malformed."""
        try:
            text = Path(path).read_text()
            data = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the regions file: {exc}") from exc
        items = data.get("regions") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ConfigError(
                f"{path}: write `regions: [{{modality: US, boxes: [[x1, y1, x2, y2]]}}]`"
            )
        return cls(tuple(_rule(item, f"{path}: regions[{i}]") for i, item in enumerate(items)))


def _rule(item: object, where: str) -> RegionRule:
    if not isinstance(item, dict) or not item.get("boxes"):
        raise ConfigError(f"{where}: give `boxes: [[x1, y1, x2, y2], ...]` (at least one box)")
    unknown = set(item) - {"boxes", "modality", "sop_class_uid", "rows", "columns"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; use modality, "
            "sop_class_uid, rows, columns, boxes"
        )
    boxes = []
    for box in item["boxes"]:
        if not (isinstance(box, list | tuple) and len(box) == 4):
            raise ConfigError(f"{where}: each box is [x1, y1, x2, y2] in pixels")
        x1, y1, x2, y2 = (int(v) for v in box)
        if not (0 <= x1 < x2 and 0 <= y1 < y2):
            raise ConfigError(f"{where}: box {box}: need 0 <= x1 < x2 and 0 <= y1 < y2")
        boxes.append((x1, y1, x2, y2))
    rows, columns = item.get("rows"), item.get("columns")
    return RegionRule(
        tuple(boxes),
        item.get("modality"),
        item.get("sop_class_uid"),
        None if rows is None else int(rows),
        None if columns is None else int(columns),
    )


def burned_in_reason(ds: Dataset) -> str | None:
    """Why `ds` may carry burned-in identification, or None."""
    modality = str(ds.get("Modality", "")).upper()
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation is YES"
    if modality in BURNED_IN_MODALITIES:
        return f"modality {modality}: {BURNED_IN_MODALITIES[modality]}"
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == SECONDARY_CAPTURE or sop_class.startswith(SECONDARY_CAPTURE + "."):
        return "a Secondary Capture image (screen captures carry burned-in text)"
    return None


def refuse_documents(ds: Dataset) -> None:
    """Raise for encapsulated documents (no region can clean a PDF's text)."""
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if modality in DOCUMENT_MODALITIES or sop_class.startswith(ENCAPSULATED_DOCUMENT):
        raise DeidRefusedError(
            "an encapsulated document: its content cannot be de-identified here; "
            "export the document through a reviewed channel instead"
        )


def blank(ds: Dataset, boxes: Sequence[tuple[int, int, int, int]]) -> bool:
    """Zero `boxes` in every frame and sample of `ds` (in place); True when it was decompressed."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    for x1, y1, x2, y2 in boxes:
        if x2 > columns or y2 > rows:
            raise DeidRefusedError(
                f"region [{x1}, {y1}, {x2}, {y2}] lies outside the {columns}x{rows} image: "
                "fix the regions file (rule for this size)"
            )
    if int(ds.get("BitsAllocated", 8)) % 8:
        raise DeidRefusedError("1-bit pixel data cannot be blanked here: export it without regions")
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    decompressed = bool(syntax is not None and syntax.is_compressed)
    if decompressed:
        ds.decompress(generate_instance_uid=False)
    pixels = np.array(ds.pixel_array, copy=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    view = pixels if frames > 1 else pixels[None]
    for x1, y1, x2, y2 in boxes:
        view[:, y1:y2, x1:x2, ...] = 0
    ds.PixelData = pixels.tobytes()
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = 0  # pixel_array is colour-by-pixel
    if meta is not None and syntax is not None and not decompressed and not syntax.is_little_endian:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BurnedInAnnotation = "NO"
    return decompressed
