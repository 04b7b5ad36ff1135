"""Round trips with real parts: Orthanc (the PACS), dcmtk, and the node as a process.

Orthanc pushes a study to the node; SEG, SR and the presentation state come back into Orthanc and
read back with highdicom and dcmtk. dcmtk's `echoscu` / `dcmsend` talk to the node with each
compressed transfer syntax; STOW-RS sends the same objects. The PACS down while results wait,
`kill -9` of the node with jobs in the outbox, and `kill -9` right after a C-STORE response: each
result arrives exactly once (Orthanc's reception log counts duplicates, which its index hides).
Privacy: the module's node runs at DEBUG; nothing it wrote may hold the patient's name or id.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import JPEG2000, JPEG2000Lossless

from tests.dicom_node import wrap
from tests.dicom_node.dcmtk_tools import tool as dcmtk_tool
from tests.dicom_node.orthanc import (
    NODE_AE,
    NodeProcess,
    Orthanc,
    StoredInstance,
    dcmsend,
    dcmtk_missing,
    echo,
    free_port,
    node_models,
    orthanc_missing,
    running_node,
    running_orthanc,
    wait_for,
)

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"
PRESENTATION = {"1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.11.2"}
# What the bundled rules send back for each kind of source (Ophthalmic Photography, VL Microscopic).
EXPECTED = {"fundus": {"SEG", "SR", "PR"}, "smear": {"SR", "PR"}}
RESULT_TIMEOUT = 240  # two loaded cores, CPU inference

pytestmark = pytest.mark.skipif(
    bool(orthanc_missing() or dcmtk_missing()), reason=orthanc_missing() or dcmtk_missing()
)


def kind_of(instance: StoredInstance) -> str:
    if instance.sop_class_uid == SEG:
        return "SEG"
    if instance.sop_class_uid == SR_3D:
        return "SR"
    return "PR" if instance.sop_class_uid in PRESENTATION else "source"


def results(pacs: Orthanc, study_uid: str) -> dict[str, list[StoredInstance]]:
    """The node's results Orthanc holds for a study, by kind (SEG, SR, PR)."""
    out: dict[str, list[StoredInstance]] = {}
    for instance in pacs.instances(study_uid):
        if kind_of(instance) != "source":
            out.setdefault(kind_of(instance), []).append(instance)
    return out


def wait_results(
    pacs: Orthanc,
    node: NodeProcess,
    study_uid: str,
    kinds: set[str],
    timeout: float = RESULT_TIMEOUT,
) -> dict[str, list[StoredInstance]]:
    """Wait until every kind of result is in Orthanc and the node's outbox is settled."""
    wait_for(
        lambda: kinds <= set(results(pacs, study_uid)),
        timeout,
        f"{sorted(kinds)} of study {study_uid} in Orthanc (node log: {node.log_path})",
    )
    wait_for(lambda: outbox_settled(node), timeout, "the node's outbox to settle")
    return results(pacs, study_uid)


def outbox_settled(node: NodeProcess) -> bool:
    return all(item["state"] not in ("pending", "sending") for item in node.outbox())


def assert_once(pacs: Orthanc, found: dict[str, list[StoredInstance]]) -> None:
    """Each result reached Orthanc exactly once (the reception log counts resends too)."""
    received = pacs.receptions()
    for instance in (i for group in found.values() for i in group):
        assert received.count(instance.sop_instance_uid) == 1, instance


def dataset(pacs: Orthanc, instance: StoredInstance) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(pacs.download(instance.orthanc_id)))


def check_read_back(
    pacs: Orthanc, found: dict[str, list[StoredInstance]], sources: list[Path], folder: Path
) -> None:
    """SEG and SR parse with highdicom, every result with dcmdump; all reference the sources."""
    source = pydicom.dcmread(sources[0], stop_before_pixels=True)
    source_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sources}
    for kind, instances in found.items():
        for instance in instances:
            ds = dataset(pacs, instance)
            assert ds.StudyInstanceUID == source.StudyInstanceUID
            assert source_uids & referenced_uids(ds), f"{kind} references no source instance"
            path = folder / f"{instance.sop_instance_uid}.dcm"
            path.write_bytes(pacs.download(instance.orthanc_id))
            run_tool("dcmdump", path)
            if kind == "SEG":
                seg = hd.seg.Segmentation.from_dataset(ds)
                assert seg.number_of_segments >= 1
                assert source_uids & {uid for *_, uid in seg.get_source_image_uids()}
            elif kind == "SR":
                hd.sr.Comprehensive3DSR.from_dataset(ds)
                assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
                assert "Imaging Measurement Report" in run_tool("dsrdump", path)
            else:
                run_tool("dcmpschk", path)


def referenced_uids(ds: pydicom.Dataset) -> set[str]:
    """Every Referenced SOP Instance UID anywhere in a dataset."""
    found: set[str] = set()

    def visit(item: pydicom.Dataset, elem: pydicom.DataElement) -> None:
        if elem.keyword == "ReferencedSOPInstanceUID":
            found.add(str(elem.value))

    ds.walk(visit)
    return found


def run_tool(tool: str, *args: object, timeout: float = 120) -> str:
    done = subprocess.run(
        [dcmtk_tool(tool), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{tool} rc={done.returncode}: {done.stderr[-1500:]}"
    return done.stdout + done.stderr


def sources_of(kind: str, folder: Path, study: wrap.Study | None = None) -> list[Path]:
    """One wrapped source object of `kind` (fundus: Ophthalmic Photography, smear: GM)."""
    make = wrap.fundus_study if kind == "fundus" else wrap.smear_series
    return make(folder, 1, study or wrap.Study())


@dataclass
class Rig:
    pacs: Orthanc
    node: NodeProcess
    root: Path

    def folder(self) -> Path:
        path = self.root / "work" / uuid.uuid4().hex[:8]
        path.mkdir(parents=True)
        return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return node_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[Rig]:
    """Orthanc and `vision serve` with the node at DEBUG, shared by the tests that kill nothing."""
    root = tmp_path_factory.mktemp("rig")
    node_port = free_port()
    with running_orthanc(root / "pacs", {"vision": (NODE_AE, "127.0.0.1", node_port)}) as pacs:
        node = NodeProcess(
            root / "node",
            models,
            pacs.destination,
            dicom_port=node_port,
            log_level="DEBUG",
            command="serve",
        )
        with running_node(node):
            yield Rig(pacs, node, root)


# Orthanc pushes, the node answers ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fundus", "smear"])
def test_orthanc_pushes_a_study_and_results_come_back(rig: Rig, kind: str) -> None:
    folder = rig.folder()
    sources = sources_of(kind, folder)
    study_uid = str(pydicom.dcmread(sources[0]).StudyInstanceUID)
    for path in sources:
        assert rig.pacs.upload(path)["Status"] == "Success"
    answer = rig.pacs.push_study("vision", study_uid)
    assert answer.get("FailedInstancesCount", 0) == 0, answer
    found = wait_results(rig.pacs, rig.node, study_uid, EXPECTED[kind])
    check_read_back(rig.pacs, found, sources, folder)
    assert_once(rig.pacs, found)
    jobs = [job for job in rig.node.jobs() if job["study_uid"] == study_uid]
    assert jobs and all(job["state"] == "sent" for job in jobs), jobs


def test_echoscu_against_the_node(rig: Rig) -> None:
    assert echo(rig.node.dicom_port)


# dcmtk's dcmsend, each transfer syntax ---------------------------------------------------------

# name -> dcmtk command (input and output file appended), or None: pydicom compresses.
SYNTAXES: dict[str, list[str] | None] = {
    "explicit-le": [],
    "implicit-le": ["dcmconv", "+ti"],
    "deflate": ["dcmconv", "+td"],
    "rle": ["dcmcrle"],
    "jpeg-baseline": ["dcmcjpeg", "+eb"],
    "jpeg-extended": ["dcmcjpeg", "+ee"],
    "jpeg-lossless": ["dcmcjpeg", "+el"],
    "jpeg-lossless-sv1": ["dcmcjpeg", "+e1"],
    "jpeg-ls-lossless": ["dcmcjpls", "+el"],
    "jpeg-ls-near-lossless": ["dcmcjpls", "+en"],
    "jpeg2000-lossless": None,
    "jpeg2000": None,
}


def compressed_copy(source: Path, name: str) -> Path:
    """`source` in transfer syntax `name` (dcmtk's tools; pydicom + openjpeg for JPEG 2000)."""
    out = source.with_name(f"{source.stem}-{name}.dcm")
    command = SYNTAXES[name]
    if command is None:
        ds = pydicom.dcmread(source)
        if name == "jpeg2000-lossless":
            ds.compress(JPEG2000Lossless)
        else:
            ds.compress(JPEG2000, j2k_cr=[20])
        ds.save_as(out)
    elif command:
        run_tool(*command, source, out)
    else:
        shutil.copy(source, out)
    return out


@pytest.mark.parametrize("name", list(SYNTAXES))
def test_dcmsend_each_transfer_syntax(rig: Rig, name: str) -> None:
    folder = rig.folder()
    source = sources_of("fundus", folder)[0]
    copy = compressed_copy(source, name)
    study_uid = str(pydicom.dcmread(copy, stop_before_pixels=True).StudyInstanceUID)
    dcmsend(rig.node.dicom_port, [copy])
    found = wait_results(rig.pacs, rig.node, study_uid, EXPECTED["fundus"])
    check_read_back(rig.pacs, found, [copy], folder)
    assert_once(rig.pacs, found)


# STOW-RS --------------------------------------------------------------------------------------


def stow(url: str, files: list[Path]) -> int:
    """POST multipart/related application/dicom parts to a STOW-RS endpoint; the HTTP status."""
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n"
            % (boundary.encode(), p.read_bytes())
            for p in files
        )
        + b"--%s--\r\n" % boundary.encode()
    )
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header(
        "Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}'
    )
    request.add_header("Accept", "application/dicom+json")
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status


def test_stow_rs_to_the_node(rig: Rig) -> None:
    folder = rig.folder()
    study = wrap.Study()
    files = sources_of("fundus", folder / "op", study) + sources_of("smear", folder / "gm", study)
    assert stow(f"{rig.node.url}/dicomweb/studies", files) == 200
    found = wait_results(rig.pacs, rig.node, study.study_uid, {"SEG", "SR", "PR"})
    check_read_back(rig.pacs, found, files, folder)
    assert_once(rig.pacs, found)


# Privacy --------------------------------------------------------------------------------------


def test_nothing_the_node_wrote_names_the_patient(rig: Rig) -> None:
    """A whole round trip at DEBUG (push, dcmsend, STOW-RS), then grep all the node wrote."""
    folder = rig.folder()
    study = wrap.Study()
    fundus, smear = (
        sources_of("fundus", folder / "a", study),
        sources_of("smear", folder / "b", study),
    )
    for path in fundus:
        rig.pacs.upload(path)
    rig.pacs.push_study("vision", study.study_uid)
    dcmsend(rig.node.dicom_port, smear)
    wait_results(rig.pacs, rig.node, study.study_uid, {"SEG", "SR", "PR"})
    assert "DEBUG" in rig.node.log_path.read_text(errors="replace"), "the node did not log at DEBUG"
    texts = {
        "log": rig.node.log_path.read_text(errors="replace"),
        "metrics": rig.node.get("/metrics"),
        "jobs API": str(rig.node.jobs()) + str(rig.node.outbox()),
        **state_texts(rig.node.state_dir),
    }
    leaks = [
        (where, phi) for where, text in texts.items() for phi in wrap.PHI_STRINGS if phi in text
    ]
    assert not leaks, f"patient identifiers in what the node wrote: {leaks}"


def state_texts(state: Path) -> dict[str, str]:
    """The node's state folder as text: SQLite databases dumped, other non-DICOM files read.

    The spool's DICOM files hold the patient (they are the received objects) and are skipped.
    """
    out = {}
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        if path.suffix in (".sqlite", ".db") or path.read_bytes()[:16].startswith(b"SQLite format"):
            out[str(path)] = sqlite_text(path)
        elif not is_dicom(path) and not path.name.endswith(("-wal", "-shm")):
            out[str(path)] = path.read_text(errors="replace")
    return out


def is_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def sqlite_text(path: Path) -> str:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


# The PACS down, kill -9 -----------------------------------------------------------------------


@pytest.fixture
def own(tmp_path: Path, models: Path) -> Iterator[Rig]:
    """Orthanc and a node of the test's own (the test stops, kills and restarts them)."""
    node_port = free_port()
    with running_orthanc(tmp_path / "pacs", {"vision": (NODE_AE, "127.0.0.1", node_port)}) as pacs:
        node = NodeProcess(tmp_path / "node", models, pacs.destination, dicom_port=node_port)
        try:
            yield Rig(pacs, node, tmp_path)
        finally:
            node.stop()


def wait_queued(node: NodeProcess, study_uid: str, timeout: float = RESULT_TIMEOUT) -> None:
    """Wait until the study's jobs have results waiting in the outbox (PACS unreachable)."""

    def queued() -> bool:
        jobs = [j for j in node.jobs() if j["study_uid"] == study_uid]
        items = node.outbox()
        return (
            bool(jobs)
            and all(j["state"] == "queued" for j in jobs)
            and bool(items)
            and any(i["attempts"] >= 1 for i in items)
        )

    wait_for(queued, timeout, f"results of {study_uid} queued, one failed attempt at least")


def test_pacs_down_while_results_wait_then_up_delivered_once(own: Rig) -> None:
    folder = own.folder()
    sources = sources_of("fundus", folder)
    study_uid = str(pydicom.dcmread(sources[0]).StudyInstanceUID)
    own.node.start()
    own.pacs.stop()
    dcmsend(own.node.dicom_port, sources)
    wait_queued(own.node, study_uid)
    own.pacs.start()
    found = wait_results(own.pacs, own.node, study_uid, EXPECTED["fundus"])
    assert_once(own.pacs, found)
    assert all(item["state"] == "sent" for item in own.node.outbox())


def test_kill9_with_jobs_in_the_outbox_delivered_once_after_restart(own: Rig) -> None:
    folder = own.folder()
    sources = sources_of("fundus", folder)
    study_uid = str(pydicom.dcmread(sources[0]).StudyInstanceUID)
    own.node.start()
    own.pacs.stop()
    dcmsend(own.node.dicom_port, sources)
    wait_queued(own.node, study_uid)
    own.node.kill9()
    own.pacs.start()
    own.node.start()
    found = wait_results(own.pacs, own.node, study_uid, EXPECTED["fundus"])
    assert_once(own.pacs, found)


def test_an_acknowledged_instance_survives_kill9_after_its_c_store_response(own: Rig) -> None:
    """C-STORE answered Success, then `kill -9` before the association ends: after a restart
    the spooled instance is processed and its results arrive, once."""
    from pynetdicom import AE

    folder = own.folder()
    source = sources_of("fundus", folder)[0]
    ds = pydicom.dcmread(source)
    own.node.idle_s = 600  # nothing would complete the series before the kill
    own.node.start()
    ae = AE(ae_title="PACS")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", own.node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assert status and status.Status == 0x0000
    own.node.kill9()
    assoc.abort()
    own.node.idle_s = 2
    own.node.start()
    found = wait_results(own.pacs, own.node, str(ds.StudyInstanceUID), EXPECTED["fundus"])
    assert_once(own.pacs, found)
