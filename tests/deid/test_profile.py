"""De-identification checked attribute by attribute against PS3.15 Table E.1-1."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.deid.helpers import KEY, fundus, sample_file, smear, with_nesting
from vision.deid import DeidOptions, PrivateTag, deidentify
from vision.deid.profile import rule_for, rules
from vision.deid.values import DUMMY

OBJECTS = {
    "CT_small.dcm": lambda: sample_file("CT_small.dcm"),
    "MR_small.dcm": lambda: sample_file("MR_small.dcm"),
    "fundus (OP, RGB)": fundus,
    "smear (GM, RGB)": smear,
    "nested CT": lambda: with_nesting(sample_file("CT_small.dcm")),
}


def _expected(code: str, tag: int) -> str:
    """The action this implementation must take for a Basic Profile code (see profile.py)."""
    from vision.deid.profile import TYPE1

    if code == "X/Z/U*":
        return "U*"
    if "/" in code:
        return "D" if tag in TYPE1 and "D" in code else ("Z" if "Z" in code else "X")
    return code


def _check(elem_in: pydicom.DataElement, out: Dataset, code: str, key: bytes) -> None:
    tag = elem_in.tag
    if code == "X":
        assert tag not in out, f"{elem_in.keyword} should be removed"
        return
    elem = out[tag]
    if code == "Z" and elem.VR != "SQ":
        if elem.keyword in ("PatientID", "PatientName"):
            assert str(elem.value).startswith("ANON-")
        else:
            assert elem.value in ("", None), f"{elem.keyword} should be empty"
    elif code == "Z":
        assert len(elem.value) == 0
    elif code == "D" and elem.VR != "SQ":
        assert elem.value == DUMMY[elem.VR] and elem.value != elem_in.value
    elif code == "U":
        assert str(elem.value).startswith("2.25.") and elem.value != elem_in.value
    elif code in ("K", "U*", "D"):
        assert elem.VR != "SQ" or len(elem.value) == len(elem_in.value)


@pytest.mark.parametrize("name", OBJECTS)
def test_each_listed_attribute_gets_its_table_action(name: str) -> None:
    source = OBJECTS[name]()
    out = deidentify(source, DeidOptions(), KEY).dataset
    checked = 0
    for elem in source:
        rule = rule_for(int(elem.tag))
        if rule is None or elem.tag.is_private:
            continue
        _check(elem, out, _expected(rule.basic, int(elem.tag)), KEY)
        checked += 1
    assert checked >= 8


def test_nested_items_get_the_profile_too() -> None:
    out = deidentify(with_nesting(sample_file("CT_small.dcm")), DeidOptions(), KEY).dataset
    ref = out.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID.startswith("2.25.")
    assert ref.ReferencedImageSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")
    assert ref.ReferencedSOPClassUID == out.SOPClassUID  # a class UID is not identifying
    inner = out.ContributingEquipmentSequence[0]
    assert inner.PersonName == "ANONYMOUS"  # D inside a kept (unlisted) sequence
    assert inner.PersonIdentificationCodeSequence[0].CodeMeaning == "someone"  # D: items kept
    assert "OtherPatientIDsSequence" not in out and "RequestAttributesSequence" not in out
    assert out.OperatorsName == ""  # X/Z/D -> Z


def test_identity_removed_and_method_codes() -> None:
    plain = deidentify(sample_file("CT_small.dcm"), DeidOptions(), KEY).dataset
    assert plain.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in plain.DeidentificationMethodCodeSequence] == ["113100"]
    assert plain.LongitudinalTemporalInformationModified == "REMOVED"
    both = deidentify(sample_file("CT_small.dcm"), DeidOptions(True, True), KEY).dataset
    codes = [i.CodeValue for i in both.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113110"]
    assert {i.CodingSchemeDesignator for i in both.DeidentificationMethodCodeSequence} == {"DCM"}
    assert both.LongitudinalTemporalInformationModified == "MODIFIED"


def test_retain_uids_keeps_every_uid_the_option_keeps() -> None:
    source = with_nesting(sample_file("CT_small.dcm"))
    out = deidentify(source, DeidOptions(retain_uids=True), KEY).dataset
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                    "FrameOfReferenceUID"):  # fmt: skip
        assert out[keyword].value == source[keyword].value
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5.6.7"
    assert out.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID


def test_private_attributes_removed_unless_kept() -> None:
    source = with_nesting(sample_file("CT_small.dcm"))
    out = deidentify(source, DeidOptions(), KEY).dataset
    assert not any(e.tag.is_private for e in out)
    keep = (PrivateTag.parse("0029,ACME 1.0,02"),)
    kept = deidentify(source, DeidOptions(keep_private=keep), KEY).dataset
    private = sorted(str(e.value) for e in kept if e.tag.is_private)
    assert private == ["ACME 1.0", "private keepable"]
    assert kept.private_block(0x0029, "ACME 1.0")[0x02].value == "private keepable"


def test_report_names_attributes_never_values() -> None:
    source = with_nesting(sample_file("CT_small.dcm"))
    result = deidentify(source, DeidOptions(), KEY)
    text = repr(result.report.to_dict())
    for value in (str(source.PatientName), source.PatientID, "Nested^Person", "OTHER-ID-1",
                  source.SOPInstanceUID):  # fmt: skip
        assert value not in text
    actions = {(r.keyword, r.action) for r in result.report.rows}
    assert ("PatientName", "Z") in actions and ("SOPInstanceUID", "U") in actions
    assert ("ReferencedImageSequence", "U*") in actions


def test_the_table_is_the_standards_shape() -> None:
    table = rules()
    assert len(table) == 459
    codes = {r.basic for r in table}
    assert codes <= {"X", "Z", "D", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
    assert rule_for(0x00100010).basic == "Z" and rule_for(0x00080018).options["uids"] == "K"
    assert rule_for(0x60023000).name == "Overlay Data" and rule_for(0x50100020).basic == "X"
    assert rule_for(0x60213000) is None  # odd group: private, not an overlay
