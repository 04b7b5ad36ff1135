"""`deidentify`: the PS3.15 Basic Application Level Confidentiality Profile on one dataset.

Every attribute listed in Table E.1-1 (`vision.deid.table`) is removed, emptied, given a dummy,
kept or replaced as the table says - at any depth: the profile is applied to every item of every
sequence that is kept. Options: Retain UIDs (else every U attribute gets a keyed pseudonymous UID,
`vision.deid.values`), Retain Longitudinal Temporal Information with Modified Dates (dates shifted
per patient), private attributes on a keep-list. Beyond the table (PS3.15 E.1-1 note 4): any other
DA / DT / TM attribute is shifted (dates option) or replaced with a dummy, group lengths are
dropped, and the File Meta Information and preamble are replaced. The report lists what was done
to each attribute, by path, tag and keyword - never a value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from vision.deid import values
from vision.deid.method import PrivateTag, mark_deidentified
from vision.deid.pixels import DeidRefusedError, Regions, blank, burned_in_reason, refuse_documents
from vision.deid.profile import action, rule_for
from vision.deid.report import DeidReport

PSEUDONYMIZED = {0x00100010, 0x00100020}  # Patient's Name, Patient ID: Z -> keyed pseudonym
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
             "UI", "UR", "UT"}  # fmt: skip


@dataclass(frozen=True)
class DeidOptions:
    """The profile's options: what is retained, and the pixel regions to blank."""

    retain_uids: bool = False
    # Retain Longitudinal Temporal Information with Modified Dates: shift, per patient.
    retain_dates: bool = False
    keep_private: tuple[PrivateTag, ...] = ()
    regions: Regions = field(default_factory=Regions)


@dataclass
class DeidResult:
    """The de-identified copy and the report of what was done."""

    dataset: Dataset
    report: DeidReport


def deidentify(ds: Dataset, options: DeidOptions, key: bytes) -> DeidResult:
    """A de-identified copy of `ds` (the input is not modified); raises DeidRefusedError."""
    if len(key) < 16:
        raise ValueError("the de-identification key must be at least 16 bytes")
    refuse_documents(ds)
    out = copy.deepcopy(ds)
    report = DeidReport()
    _pixels(out, options, report)
    patient = values_text(ds.get("PatientID"))
    walker = _Walker(options, key, patient, report)
    walker.dataset(out, "")
    _file_meta(out, ds, report)
    mark_deidentified(out, options.retain_uids, options.retain_dates)
    report.shifted_days = walker.days if options.retain_dates else None
    return DeidResult(out, report)


def values_text(value: Any) -> str:
    """An element value as text ('' when absent)."""
    return "" if value is None else str(value).strip("\x00 ")


def _pixels(ds: Dataset, options: DeidOptions, report: DeidReport) -> None:
    reason = burned_in_reason(ds)
    if reason is None:
        report.pixels = "unchanged" if "PixelData" in ds else "none"
        return
    rule = options.regions.match(ds)
    if rule is None or "PixelData" not in ds:
        raise DeidRefusedError(
            f"refused: {reason}. Configure regions to blank for this modality / SOP class / size "
            "(vision deid --regions FILE) or do not export it"
        )
    decompressed = blank(ds, rule.boxes)
    report.pixels = "blanked"
    report.burned_in_reason = reason
    report.blanked = [list(b) for b in rule.boxes]
    report.decompressed = decompressed


class _Walker:
    """Applies the table to a dataset and, recursively, to the items of its sequences."""

    def __init__(self, options: DeidOptions, key: bytes, patient: str, report: DeidReport):
        self.options, self.key, self.report = options, key, report
        self.days = values.shift_days(key, patient)
        self.pseudonym = values.pseudonym(key, patient)

    def dataset(self, ds: Dataset, path: str) -> None:
        creators = {int(e.tag): values_text(e.value) for e in ds if e.tag.is_private_creator}
        for elem in list(ds):
            where = f"{path}{elem.keyword or f'({elem.tag.group:04X},{elem.tag.element:04X})'}"
            if elem.tag.is_private:
                self._private(ds, elem, creators, where)
            elif elem.tag.element == 0:
                del ds[elem.tag]
                self.report.add(where, elem, "X", "group length (recomputed on write)")
            else:
                self._standard(ds, elem, where)

    def items(self, elem: DataElement, where: str) -> None:
        for i, item in enumerate(elem.value or ()):
            self.dataset(item, f"{where}[{i}].")

    def _private(self, ds: Dataset, elem: DataElement, creators: dict[int, str], where: str):
        tag = elem.tag
        keep = self.options.keep_private
        if tag.is_private_creator:
            kept = any(k.group == tag.group and k.creator == values_text(elem.value) for k in keep)
        else:
            creator = creators.get((tag.group << 16) | (tag.element >> 8), "")
            kept = PrivateTag(tag.group, creator, tag.element & 0xFF) in keep
        if not kept:
            del ds[tag]
            self.report.add(where, elem, "X", "basic (private attribute)")
            return
        self.report.add(where, elem, "K", "keep-list (private)")
        if elem.VR == "SQ":
            self.items(elem, where)

    def _standard(self, ds: Dataset, elem: DataElement, where: str) -> None:
        tag = int(elem.tag)
        rule = rule_for(tag)
        if rule is not None:
            code, why = action(rule, tag, self.options.retain_uids, self.options.retain_dates)
        elif elem.VR in ("DA", "DT", "TM"):
            code = "C" if self.options.retain_dates else "D"
            why = "date/time VR, not in the table (E.1-1 note 4)"
        else:
            if elem.VR == "SQ":
                self.items(elem, where)
            return
        self._apply(ds, elem, code, why, where)

    def _apply(self, ds: Dataset, elem: DataElement, code: str, why: str, where: str) -> None:
        if code == "X":
            del ds[elem.tag]
        elif elem.VR == "SQ":
            if code == "Z":
                elem.value = Sequence()
            else:  # K, D, C, U*: the items are kept and the profile applied to each of them
                self.items(elem, where)
        elif code == "Z" and int(elem.tag) in PSEUDONYMIZED:
            elem.value = self.pseudonym
            why += ", keyed pseudonym"
        elif code == "Z":
            elem.value = "" if elem.VR in _TEXT_VRS else None
        elif code == "D":
            elem.value = values.DUMMY.get(elem.VR, "")
        elif code == "U" and elem.VR == "UI":
            elem.value = self._uids(elem.value)
        elif code == "C" and elem.VR in ("DA", "DT", "TM"):
            why = self._shift(elem, why)
        elif code not in ("K", "C"):
            elem.value = "" if elem.VR in _TEXT_VRS else None
            why += f", {code} on VR {elem.VR}: emptied"
        self.report.add(where, elem, code, why)

    def _uids(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        if isinstance(value, str):
            return values.pseudonymous_uid(self.key, value)
        return [values.pseudonymous_uid(self.key, str(v)) for v in value]

    def _shift(self, elem: DataElement, why: str) -> str:
        text = values_text(elem.value)
        if not text:
            return why
        shifted = values.shift_value(elem.VR, text, self.days)
        if shifted is None:
            elem.value = ""
            return why + ", not a valid date: emptied"
        elem.value = shifted
        return why + (", time of day kept" if elem.VR == "TM" else ", shifted")


def _file_meta(out: Dataset, source: Dataset, report: DeidReport) -> None:
    """New File Meta Information describing this de-identifier; the preamble zeroed."""
    old = getattr(source, "file_meta", None)
    meta = FileMetaDataset()
    if "SOPClassUID" in out:
        meta.MediaStorageSOPClassUID = out.SOPClassUID
    if "SOPInstanceUID" in out:
        meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    syntax = getattr(getattr(out, "file_meta", None), "TransferSyntaxUID", None)
    syntax = syntax or (getattr(old, "TransferSyntaxUID", None) if old is not None else None)
    if syntax:
        meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "VISION_DEID"
    out.file_meta = meta
    out.preamble = b"\x00" * 128
    if old is not None and "SourceApplicationEntityTitle" in old:
        report.rows.append(
            report.row(
                "file meta.",
                0x00020016,
                "SourceApplicationEntityTitle",
                "X",
                "file meta replaced (E.1.1 item 7)",
            )
        )
