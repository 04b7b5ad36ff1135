"""A full disk under the DICOM spool and the outbox, on a real (small) tmpfs: C-STORE answers
Out of Resources (0xA700) instead of success, associations are refused below the floor, and
every instance that was acknowledged is on disk; a failed outbox write leaves nothing behind."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE

from dicom_node.jobs import JobStore
from dicom_node.model import Destination, NodeSettings, SpooledInstance
from dicom_node.outbox import Outbox
from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool

DISK_MB = 4
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (skips where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _instance(pixels_kb: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.PatientID, ds.Modality = "ANON", "OT"
    side = int((pixels_kb * 1024) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 256, side * side, np.uint8).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _store_all(port: int, datasets: list[Dataset]) -> list[int]:
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="VISION")
    if not assoc.is_established:
        return []
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _scp(state: Path, floor_mb: int, heard: list[SpooledInstance]) -> StorageSCP:
    settings = NodeSettings(host="127.0.0.1", port=0, min_free_disk_mb=floor_mb, state_dir=state)
    return StorageSCP(settings, Spool(state / "spool"), heard.append, lambda ae: None)


def test_a_full_spool_answers_out_of_resources_and_loses_nothing_acknowledged(small_disk):
    heard: list[SpooledInstance] = []
    scp = _scp(small_disk, 0, heard)  # no floor: the writes themselves hit the full disk
    port = scp.start()
    try:
        datasets = [_instance(400) for _ in range(14)]  # 5.6 MB into 4 MiB
        statuses = _store_all(port, datasets)
    finally:
        scp.stop()
    assert set(statuses) == {SUCCESS, OUT_OF_RESOURCES}, statuses
    first_refused = statuses.index(OUT_OF_RESOURCES)
    assert all(s == SUCCESS for s in statuses[:first_refused])
    acknowledged = [ds for ds, s in zip(datasets, statuses, strict=True) if s == SUCCESS]
    assert len(heard) == len(acknowledged)
    spool = Spool(small_disk / "spool")
    for ds in acknowledged:  # each one whole on disk, pixels included
        path = spool.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert pydicom.dcmread(path).PixelData == ds.PixelData
    leftovers = [p for p in (small_disk / "spool").rglob("*") if p.name.startswith(".incoming")]
    assert leftovers == []  # failed writes took their temporary files with them


def test_below_the_free_disk_floor_associations_are_refused(small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * ((DISK_MB - 1) * 1024 * 1024 + 512 * 1024))  # 0.5 MiB left
    heard: list[SpooledInstance] = []
    scp = _scp(small_disk, 1, heard)  # the floor: 1 MB
    port = scp.start()
    try:
        assert _store_all(port, [_instance(10)]) == []  # the association was rejected
        filler.unlink()
        assert _store_all(port, [_instance(10)]) == [SUCCESS]  # room again: accepted
    finally:
        scp.stop()
    assert len(heard) == 1


def test_a_full_disk_under_the_outbox_fails_the_enqueue_and_leaves_nothing(small_disk):
    outbox = Outbox(JobStore(small_disk / "node.sqlite"), [Destination.parse("PACS@127.0.0.1:1")])
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 64 * 1024))  # 64 KiB left
    with pytest.raises(OSError) as info:
        outbox.enqueue("job-1", [_instance(400)])
    # pydicom re-raises the write's ENOSPC with its own message
    assert info.value.errno == errno.ENOSPC or "No space left on device" in str(info.value)
    assert [p.name for p in outbox.folder.iterdir()] == []  # no half-written result
    assert outbox.list() == []  # and no delivery row names one
    filler.unlink()
    assert len(outbox.enqueue("job-1", [_instance(400)])) == 1  # room again: queued
