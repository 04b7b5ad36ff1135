"""`vision deid IN OUT`: folders mirrored, reports, refusals, keys; no identifier written."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from app.cli import main
from tests.deid.helpers import fundus, sample_file, smear
from tests.dicom_node.wrap import ACCESSION, PATIENT_ID, PATIENT_NAME, Study, save


def _tree(root: Path) -> Path:
    study = Study()
    save(fundus(study), root / "a" / "op.dcm")
    save(smear(study), root / "b" / "c" / "gm.dcm")
    us = fundus(study)
    us.Modality = "US"
    save(us, root / "us.dcm")
    ct = sample_file("CT_small.dcm")
    ct.save_as(root / "ct.dcm")
    (root / "notes.txt").write_text("not dicom")
    return root


def test_folder_is_mirrored_with_a_report_and_no_identifier(tmp_path: Path, capsys) -> None:
    source = _tree(tmp_path / "in")
    out, key = tmp_path / "out", tmp_path / "keys" / "deid.key"
    ct = sample_file("CT_small.dcm")
    code = main(["deid", str(source), str(out), "--key-file", str(key), "--retain-dates"])
    assert code == 1  # the ultrasound was refused
    assert (out / "a" / "op.dcm").is_file() and (out / "b" / "c" / "gm.dcm").is_file()
    assert not (out / "us.dcm").exists() and not (out / "notes.txt").exists()
    report = json.loads((out / "deid-report.json").read_text())
    assert report["written"] == 3 and report["not_dicom"] == 1
    assert report["refused"][0]["file"] == "us.dcm" and "US" in report["refused"][0]["reason"]
    assert report["actions"]["U"] > 0 and report["options"]["retain_dates_modified"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    secrets = [PATIENT_NAME, "Testpatient", PATIENT_ID, ACCESSION, "19461203",
               str(ct.PatientName), ct.PatientID, ct.SOPInstanceUID]  # fmt: skip
    written = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    printed = capsys.readouterr()
    for secret in secrets:
        assert all(secret.encode() not in data for data in written), secret
        assert secret not in printed.out + printed.err
    assert key.read_bytes().hex() not in printed.out + printed.err


def test_same_key_gives_the_same_files(tmp_path: Path) -> None:
    source = _tree(tmp_path / "in")
    key = tmp_path / "k"
    main(["deid", str(source), str(tmp_path / "o1"), "--key-file", str(key)])
    main(["deid", str(source), str(tmp_path / "o2"), "--key-file", str(key)])
    first = (tmp_path / "o1" / "a" / "op.dcm").read_bytes()
    assert first == (tmp_path / "o2" / "a" / "op.dcm").read_bytes()


def test_inputs_are_never_overwritten(tmp_path: Path, capsys) -> None:
    source = _tree(tmp_path / "in")
    key = str(tmp_path / "k")
    assert main(["deid", str(source), str(source / "sub"), "--key-file", key]) == 2
    assert "outside the input" in capsys.readouterr().err
    one = source / "ct.dcm"
    assert main(["deid", str(one), str(one), "--key-file", key]) == 2
    assert "overwrite an input" in capsys.readouterr().err


def test_keep_private_and_a_single_file(tmp_path: Path) -> None:
    from tests.deid.helpers import with_nesting

    src = tmp_path / "x.dcm"
    with_nesting(sample_file("CT_small.dcm")).save_as(src)
    out = tmp_path / "o" / "x.dcm"
    args = ["deid", str(src), str(out), "--key-file", str(tmp_path / "k"),
            "--keep-private", "0029,ACME 1.0,02", "--report", str(tmp_path / "r.json")]  # fmt: skip
    assert main(args) == 0
    import pydicom

    ds = pydicom.dcmread(out)
    assert ds.private_block(0x0029, "ACME 1.0")[0x02].value == "private keepable"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["options"]["keep_private"] == ["0029,ACME 1.0,02"]


def test_bad_flags_say_the_fix(tmp_path: Path, capsys) -> None:
    src = tmp_path / "x.dcm"
    sample_file("CT_small.dcm").save_as(src)
    args = ["deid", str(src), str(tmp_path / "o.dcm"), "--key-file", str(tmp_path / "k"),
            "--keep-private", "0028,X,01"]  # fmt: skip
    assert main(args) == 2
    assert "odd hex group" in capsys.readouterr().err
    key = tmp_path / "open.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    assert main(["deid", str(src), str(tmp_path / "o.dcm"), "--key-file", str(key)]) == 2
    assert "chmod 600" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--dicom-deid"])
def test_node_flags_reach_the_settings(flag: str, tmp_path: Path) -> None:
    from app.commands.serve import build_parser, dicom_settings_from

    args = build_parser().parse_args(
        ["--dicom-port", "11112", flag, "--dicom-deid-key", str(tmp_path / "k")]
    )
    settings = dicom_settings_from(args)
    assert settings.deid and settings.deid_key_file == tmp_path / "k"
