"""Objects for the de-identification tests: pydicom's test files and built ones."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.dicom_node.wrap import Study, ophthalmic_photo, vl_microscopic

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PRIVATE_CREATOR = "ACME 1.0"


def sample_file(name: str) -> Dataset:
    """A pydicom test file (CT_small.dcm, MR_small.dcm, SC_rgb.dcm, ...)."""
    return pydicom.dcmread(get_testdata_file(name))


def fundus(study: Study | None = None) -> Dataset:
    """An Ophthalmic Photography object (RGB, the wrap helpers' fake patient)."""
    rng = np.random.default_rng(0)
    return ophthalmic_photo([rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)], study or Study())


def smear(study: Study | None = None) -> Dataset:
    """A VL Microscopic object (modality GM)."""
    rng = np.random.default_rng(1)
    return vl_microscopic(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), study or Study())


def with_nesting(ds: Dataset) -> Dataset:
    """`ds` with nested sequences (references, persons, codes) and private attributes."""
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7"
    inner = Dataset()
    inner.PersonName = "Nested^Person"
    inner.PersonIdentificationCodeSequence = Sequence([_code()])
    ref.ReferencedImageSequence = Sequence([_ref("1.2.3.4.5.6.8")])
    ds.ReferencedImageSequence = Sequence([ref])
    ds.SourceImageSequence = Sequence([_ref("1.2.3.4.5.6.9")])
    ds.OperatorsName = "Operator^One"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "OTHER-ID-1"
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.RequestAttributesSequence[0].RequestedProcedureID = "RP-1"
    ds.ContributingEquipmentSequence = Sequence([inner])
    block = ds.private_block(0x0029, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", "private identifier")
    block.add_new(0x02, "LO", "private keepable")
    return ds


def _code() -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "X1", "99LOCAL", "someone"
    return item


def _ref(uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = uid
    return item


def all_uids(ds: Dataset) -> set[str]:
    """Every UI value at any depth, but SOP Class / Transfer Syntax style standard UIDs."""
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value and "Class" not in elem.keyword:
            values = elem.value if isinstance(elem.value, list) else [elem.value]
            found.update(str(v) for v in values)
    return found
