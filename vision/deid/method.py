"""How a de-identified object says so: PatientIdentityRemoved, the method and its codes.

PS3.15 E.1.1 item 6: Patient Identity Removed (0012,0062) YES and, in De-identification Method
Code Sequence (0012,0064), the codes of the profile and options used (PS3.16 CID 7050):
113100 Basic Application Confidentiality Profile, 113107 Retain Longitudinal Temporal
Information Modified Dates Option, 113110 Retain UIDs Option. Longitudinal Temporal Information
Modified (0028,0303) says whether dates were shifted (MODIFIED) or removed (REMOVED).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from vision.errors import ConfigError

BASIC = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
RETAIN_UIDS = ("113110", "Retain UIDs Option")
METHOD = "vision-serving deid: PS3.15 E.1-1"


@dataclass(frozen=True)
class PrivateTag:
    """A private attribute to keep: its group, private creator and element (low byte)."""

    group: int
    creator: str
    element: int

    @classmethod
    def parse(cls, text: str) -> PrivateTag:
        """`GGGG,CREATOR,EE` (hex group, creator text, hex element byte), e.g. `0019,ACME 1,08`."""
        parts = [p.strip() for p in text.split(",")]
        try:
            group, creator, element = int(parts[0], 16), parts[1], int(parts[2], 16)
        except (IndexError, ValueError):
            group, creator, element = 0, "", -1
        if len(parts) != 3 or not group & 1 or not creator or not 0 <= element <= 0xFF:
            raise ConfigError(
                f"private tag {text!r}: write GGGG,CREATOR,EE with an odd hex group and the "
                "element's low byte in hex, e.g. 0019,SIEMENS MR HEADER,08"
            )
        return cls(group, creator, element)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def method_codes(retain_uids: bool, retain_dates: bool) -> list[tuple[str, str]]:
    """The CID 7050 codes of the profile and the options in use."""
    return [
        BASIC,
        *([MODIFIED_DATES] if retain_dates else []),
        *([RETAIN_UIDS] if retain_uids else []),
    ]


def mark_deidentified(ds: Dataset, retain_uids: bool, retain_dates: bool) -> None:
    """Set PatientIdentityRemoved, the method text and codes, and the temporal flag."""
    codes = method_codes(retain_uids, retain_dates)
    ds.PatientIdentityRemoved = "YES"
    previous = [str(v) for v in _as_list(ds.get("DeidentificationMethod"))]
    ds.DeidentificationMethod = [*previous, METHOD][-8:]
    held = list(ds.get("DeidentificationMethodCodeSequence", Sequence()))
    known = {str(i.get("CodeValue", "")) for i in held}
    held += [_code(v, m) for v, m in codes if v not in known]
    ds.DeidentificationMethodCodeSequence = Sequence(held)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if retain_dates else "REMOVED"


def _as_list(value: object) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return list(value)  # type: ignore[call-overload]
