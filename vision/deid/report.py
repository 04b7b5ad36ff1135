"""What de-identification did to one object: per attribute (path, tag, keyword, action, why).

The report never holds a value: paths name sequences and item indexes, tags and keywords name
attributes, actions are Table E.1-1 codes (X removed, Z emptied, D dummy, K kept, C cleaned -
dates shifted, U new UID, U* sequence kept with its UIDs replaced).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement


@dataclass(frozen=True)
class ReportRow:
    """One attribute occurrence and what was done to it."""

    path: str
    tag: str
    keyword: str
    action: str
    why: str


@dataclass
class DeidReport:
    """The rows of one object, and what happened to its pixels."""

    rows: list[ReportRow] = field(default_factory=list)
    pixels: str = "unchanged"  # unchanged | blanked | none (no pixel data)
    burned_in_reason: str | None = None
    blanked: list[list[int]] = field(default_factory=list)
    decompressed: bool = False  # compressed pixels decoded, blanked, written uncompressed
    shifted_days: int | None = None  # held for the caller; never written to a report file

    @staticmethod
    def row(path: str, tag: int, keyword: str, action: str, why: str) -> ReportRow:
        """A row for `tag` at `path`."""
        return ReportRow(path, f"({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword, action, why)

    def add(self, path: str, elem: DataElement, action: str, why: str) -> None:
        """Record `action` on `elem`."""
        self.rows.append(self.row(path, int(elem.tag), elem.keyword or "", action, why))

    def counts(self) -> dict[str, int]:
        """How many attribute occurrences got each action."""
        return dict(sorted(Counter(r.action for r in self.rows).items()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (no values; the date offset is left out: it would undo the shift)."""
        return {
            "pixels": self.pixels,
            "burned_in_reason": self.burned_in_reason,
            "blanked_regions": self.blanked,
            "decompressed": self.decompressed,
            "counts": self.counts(),
            "attributes": [r.__dict__ for r in self.rows],
        }
