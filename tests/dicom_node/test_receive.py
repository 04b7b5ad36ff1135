"""Receive: a real StorageSCP on loopback, dcmtk and pynetdicom peers, the spool, STOW-RS."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, RTDoseStorage, Verification
from starlette.applications import Starlette
from starlette.testclient import TestClient

from dicom_node.model import SpooledInstance
from dicom_node.spool import Spool
from dicom_node.stow import stow_routes
from dicom_node.syntaxes import UNCOMPRESSED
from tests.dicom_node.conftest import RunningSCP, dcmtk, need_tools, pydicom_file
from vision.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uncompressed real files of several modalities: CT, MR, RGB SC, 2-frame RGB SC."""
    need_tools("dcmdrle")
    folder = tmp_path_factory.mktemp("originals")
    files = {"ct": pydicom_file("CT_small.dcm"), "mr": pydicom_file("MR_small.dcm")}
    for key, name in (("rgb", "SC_rgb_rle.dcm"), ("frames", "SC_rgb_rle_2frame.dcm")):
        out = folder / f"{key}.dcm"
        result = dcmtk("dcmdrle", pydicom_file(name), out)
        assert result.returncode == 0, result.stderr
        files[key] = out
    return files


def _pydicom_copy(src: Path, out: Path, syntax: str) -> Path:
    ds = pydicom.dcmread(src)
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(out, enforce_file_format=True)
    else:
        ds.compress(syntax, **({"j2k_cr": [5]} if syntax == JPEG2000 else {}))
        ds.save_as(out, enforce_file_format=True)
    return out


# (original, how to compress, transfer syntax UID, lossless)
COPIES = [
    ("ct", ("dcmcjpeg", "+el"), "1.2.840.10008.1.2.4.57", True),
    ("mr", ("dcmcjpeg", "+e1"), "1.2.840.10008.1.2.4.70", True),
    ("ct", ("dcmcjpls",), "1.2.840.10008.1.2.4.80", True),
    ("rgb", ("dcmcjpls", "+en"), "1.2.840.10008.1.2.4.81", False),
    ("mr", ("dcmcrle",), "1.2.840.10008.1.2.5", True),
    ("rgb", ("dcmcjpeg", "+eb"), "1.2.840.10008.1.2.4.50", False),
    ("rgb", ("dcmcjpeg", "+ee"), "1.2.840.10008.1.2.4.51", False),
    ("frames", ("dcmcrle",), "1.2.840.10008.1.2.5", True),
    ("ct", ("pydicom",), JPEG2000Lossless, True),
    ("rgb", ("pydicom",), JPEG2000, False),
    ("mr", ("pydicom",), DeflatedExplicitVRLittleEndian, True),
    ("ct", ("dcmconv", "+ti"), "1.2.840.10008.1.2", True),
    ("rgb", ("dcmconv", "+te"), ExplicitVRLittleEndian, True),
]
COPY_IDS = [f"{key}-{syntax}" for key, _, syntax, _ in COPIES]


@pytest.fixture(scope="module")
def copies(originals: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Each original compressed with dcmtk or pydicom, in the order of COPIES."""
    folder = tmp_path_factory.mktemp("copies")
    made = []
    for index, (key, tool, syntax, _) in enumerate(COPIES):
        out = folder / f"{index}-{key}.dcm"
        if tool[0] == "pydicom":
            _pydicom_copy(originals[key], out, syntax)
        else:
            result = dcmtk(tool[0], *tool[1:], originals[key], out)
            assert result.returncode == 0, result.stderr
        assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == syntax
        made.append(out)
    return made


def _same_pixels(received: Path, original: Path, lossless: bool) -> None:
    got = pydicom.dcmread(received).pixel_array.astype(np.float64)
    want = pydicom.dcmread(original).pixel_array.astype(np.float64)
    assert got.shape == want.shape
    if lossless:
        np.testing.assert_array_equal(got, want)
    else:  # lossy: close to the original, not equal
        assert np.abs(got - want).mean() < 0.05 * (want.max() - want.min() + 1)


def _scu(ae_title: str = "TESTSCU") -> AE:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def _send(running: RunningSCP, path: Path, ae_title: str = "TESTSCU") -> int:
    ds = pydicom.dcmread(path)
    ae = _scu(ae_title)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="VISION")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return int(status.Status)


def _spooled(running: RunningSCP, path: Path) -> Path:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    spooled = running.spool.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert spooled.is_file()
    return spooled


def test_echo_with_echoscu(start_scp) -> None:
    running = start_scp()
    result = dcmtk("echoscu", "-aec", "VISION", "127.0.0.1", str(running.port))
    assert result.returncode == 0, result.stderr
    assert running.released == []  # an echo-only association completes nothing


@pytest.mark.parametrize("index", range(len(COPIES)), ids=COPY_IDS)
def test_store_every_syntax_with_pynetdicom_and_dcmsend(
    start_scp, copies, originals, index: int
) -> None:
    key, _, syntax, lossless = COPIES[index]
    running = start_scp()
    assert _send(running, copies[index]) == 0x0000
    spooled = _spooled(running, copies[index])
    received = pydicom.dcmread(spooled).file_meta.TransferSyntaxUID
    # dcmsend may pick any uncompressed syntax for an uncompressed file; a compressed one stays.
    assert received == syntax or (syntax in UNCOMPRESSED and received in UNCOMPRESSED)
    _same_pixels(spooled, originals[key], lossless)
    assert running.instances[-1].path == spooled
    assert running.instances[-1].transfer_syntax == syntax
    assert running.released == ["TESTSCU"]
    spooled.unlink()

    result = dcmtk(
        "dcmsend",
        "-v",
        "-dn",  # never decompress: the compressed syntax goes on the wire
        "-aet",
        "DCMSEND",
        "-aec",
        "VISION",
        "127.0.0.1",
        str(running.port),
        copies[index],
    )
    assert result.returncode == 0, result.stderr
    assert "Received C-STORE Response (Success)" in result.stderr, result.stderr
    spooled = _spooled(running, copies[index])
    received = pydicom.dcmread(spooled).file_meta.TransferSyntaxUID
    # dcmsend may pick any uncompressed syntax for an uncompressed file; a compressed one stays.
    assert received == syntax or (syntax in UNCOMPRESSED and received in UNCOMPRESSED)
    _same_pixels(spooled, originals[key], lossless)
    assert running.instances[-1].calling_ae == "DCMSEND"


def test_calling_ae_allow_list(start_scp, originals) -> None:
    running = start_scp(allowed_calling_aes=("PACS",))
    refused = dcmtk("echoscu", "-aet", "OTHER", "-aec", "VISION", "127.0.0.1", str(running.port))
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr, refused.stderr
    assert _send(running, originals["ct"], ae_title="PACS") == 0x0000
    ae = _scu("OTHER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="VISION")
    assert assoc.is_rejected
    assert [i.calling_ae for i in running.instances] == ["PACS"]


def test_disk_floor_refuses_associations(start_scp, originals) -> None:
    running = start_scp(min_free_disk_mb=10**12)
    refused = dcmtk("echoscu", "-aec", "VISION", "127.0.0.1", str(running.port))
    assert refused.returncode != 0
    assert "Local Limit Exceeded" in refused.stderr, refused.stderr
    ae = _scu()
    ae.add_requested_context(CTImageStorage)
    assert ae.associate("127.0.0.1", running.port, ae_title="VISION").is_rejected
    assert running.spool.pending() == [] and running.instances == []


def test_unsupported_sop_class_refused(start_scp, originals) -> None:
    running = start_scp()
    rtdose = pydicom_file("rtdose.dcm")
    result = dcmtk("dcmsend", "-aec", "VISION", "127.0.0.1", str(running.port), rtdose)
    assert "No Acceptable Presentation Contexts" in result.stderr, result.stderr
    ae = _scu()
    ae.add_requested_context(RTDoseStorage)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="VISION")
    assert assoc.is_established
    try:
        assert [c.abstract_syntax for c in assoc.accepted_contexts] == [CTImageStorage]
        # A C-STORE of RT Dose sent on the CT context: refused on the wire, 0x0122.
        assert _raw_store(assoc, pydicom.dcmread(rtdose), RTDoseStorage) == 0x0122
        # A data set whose SOP Instance UID is not the request's: 0xA900.
        ct = pydicom.dcmread(originals["ct"])
        assert _raw_store(assoc, ct, CTImageStorage, generate_uid()) == 0xA900
    finally:
        assoc.release()
    assert running.instances == []


def _raw_store(assoc, ds, sop_class: str, sop_instance: str | None = None) -> int:
    """A C-STORE-RQ built by hand (pynetdicom's send_c_store would refuse to send these)."""
    context = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CTImageStorage)
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_instance or ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = _encoded(ds, context.transfer_syntax[0])
    # Pause the requestor's reactor as send_c_store does, so that it leaves the response to us.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    try:
        assoc.dimse.send_msg(request, context.context_id)
        _, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert response is not None, "no C-STORE response"
    return int(response.Status)


def _encoded(ds, syntax) -> io.BytesIO:
    return io.BytesIO(encode(ds, syntax.is_implicit_VR, syntax.is_little_endian))


def test_spool_failure_answers_out_of_resources(start_scp, originals, monkeypatch) -> None:
    running = start_scp()

    def broken(*args: object) -> SpooledInstance:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(running.spool, "store", broken)
    assert _send(running, originals["ct"]) == 0xA700
    assert running.instances == []


SCP_SCRIPT = """
import sys
from pathlib import Path
from dicom_node.model import NodeSettings
from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
state = Path(sys.argv[1])
settings = NodeSettings(host="127.0.0.1", port=0, min_free_disk_mb=1, state_dir=state)
scp = StorageSCP(settings, Spool(state / "spool"), lambda i: None, lambda ae: None)
print(scp.start(), flush=True)
sys.stdin.read()
"""


def test_acknowledged_instance_survives_kill_9(tmp_path, originals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCP_SCRIPT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        port = int(proc.stdout.readline())
        ds = pydicom.dcmread(originals["mr"])
        ae = _scu()
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="VISION")
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        os.kill(proc.pid, signal.SIGKILL)  # right after the response, before any release
        assert int(status.Status) == 0x0000
        proc.wait(timeout=30)
        assoc.abort()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    pending = Spool(tmp_path / "spool").pending()
    assert [p.sop_instance_uid for p in pending] == [ds.SOPInstanceUID]
    assert pending[0].calling_ae == "TESTSCU"
    _same_pixels(pending[0].path, originals["mr"], lossless=True)


def test_spool_paths_refuse_bad_uids_and_overwrite_idempotently(tmp_path, originals) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(InvalidInputError):
        spool.path_for("1.2", "../../etc", "1.3")
    for bad in ("1.2/3", "1." + "2" * 70, "", "1..2", "abc"):
        with pytest.raises(InvalidInputError):
            spool.path_for(bad, "1.2", "1.3")
    ds = pydicom.dcmread(originals["ct"])
    ds.SeriesInstanceUID = "1.2.3/../../x"
    with pytest.raises(InvalidInputError):
        spool.store(ds, "AE", ExplicitVRLittleEndian)
    assert list((tmp_path / "spool").rglob("*")) == []
    first = spool.store(pydicom.dcmread(originals["ct"]), "AE", ExplicitVRLittleEndian)
    second = spool.store(pydicom.dcmread(originals["ct"]), "AE2", ExplicitVRLittleEndian)
    assert first.path == second.path
    assert [p.calling_ae for p in spool.pending()] == ["AE2"]
    assert spool.load(second).SOPInstanceUID == second.sop_instance_uid
    assert spool.free_bytes() > 0
    spool.discard(second)
    assert spool.pending() == [] and list((tmp_path / "spool").iterdir()) == []


def _multipart(parts: list[bytes], boundary: str = "b0undary") -> bytes:
    body = b""
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b0undary'


@pytest.fixture
def stow(tmp_path):
    spool = Spool(tmp_path / "stow")
    heard: list[SpooledInstance] = []
    app = Starlette(routes=stow_routes(spool, heard.append, max_body_bytes=2_000_000))
    with TestClient(app) as client:
        yield client, spool, heard


def test_stow_stores_every_part(stow, originals, copies) -> None:
    client, spool, heard = stow
    files = [originals["ct"], copies[COPY_IDS.index("mr-1.2.840.10008.1.2.5")]]
    response = client.post(
        "/dicomweb/studies",
        content=_multipart([f.read_bytes() for f in files]),
        headers={"Content-Type": STOW_TYPE},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    stored = response.json()["00081199"]["Value"]
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in files]
    assert [item["00081155"]["Value"][0] for item in stored] == uids
    assert "00081198" not in response.json()
    assert [i.calling_ae for i in heard] == ["STOW", "STOW"]
    _same_pixels(heard[1].path, originals["mr"], lossless=True)
    assert heard[1].transfer_syntax == "1.2.840.10008.1.2.5"


def test_stow_partial_failure_and_refusals(stow, originals) -> None:
    client, spool, heard = stow
    parts = [
        b"not dicom at all",
        pydicom_file("rtdose.dcm").read_bytes(),
        originals["mr"].read_bytes(),
    ]
    response = client.post(
        "/dicomweb/studies", content=_multipart(parts), headers={"Content-Type": STOW_TYPE}
    )
    assert response.status_code == 202, response.text
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"][0] for item in failed] == [0xC000, 0x0122]
    assert failed[1]["00081150"]["Value"] == [RTDoseStorage]
    assert len(response.json()["00081199"]["Value"]) == 1
    assert [p.sop_instance_uid for p in spool.pending()] == [heard[0].sop_instance_uid]

    other_study = client.post(
        "/dicomweb/studies/1.2.3.4",
        content=_multipart(parts[2:]),
        headers={"Content-Type": STOW_TYPE},
    )
    assert other_study.status_code == 409
    assert other_study.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]

    wrong = client.post(
        "/dicomweb/studies", content=parts[2], headers={"Content-Type": "application/dicom"}
    )
    assert wrong.status_code == 415
    no_type = client.post(
        "/dicomweb/studies",
        content=_multipart(parts[2:]),
        headers={"Content-Type": "multipart/related; boundary=b0undary"},
    )
    assert no_type.status_code == 415
    too_big = client.post(
        "/dicomweb/studies",
        content=_multipart([b"x" * 2_000_001]),
        headers={"Content-Type": STOW_TYPE},
    )
    assert too_big.status_code == 413
    broken = client.post(
        "/dicomweb/studies", content=b"--b0undary\r\nno end", headers={"Content-Type": STOW_TYPE}
    )
    assert broken.status_code == 400
    assert len(heard) == 1
