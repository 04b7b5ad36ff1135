"""dcmtk's `storescp` as a bare archive (no index, no database) for benches and tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pynetdicom import AE

from dicom_node.model import Destination
from tests.dicom_node.dcmtk_tools import tool_path
from tests.dicom_node.orthanc import free_port, stop_pid, wait_for

ARCHIVE_AE = "ARCHIVE"


def storescp_missing() -> str:
    """Why dcmtk's storescp cannot run here ('' when it can)."""
    return "" if tool_path("storescp") else "dcmtk's storescp missing: apt-get install dcmtk"


def _echo(dest: Destination) -> bool:
    ae = AE("PROBE")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    established = assoc.is_established
    if established:
        assoc.release()
    return established


@contextmanager
def running_storescp(folder: Path) -> Iterator[Destination]:
    """dcmtk's storescp on a free loopback port (any storage SOP class and transfer syntax),
    writing what it receives into `folder`; stopped by PID."""
    binary = tool_path("storescp")
    if binary is None:
        raise RuntimeError(storescp_missing())
    folder.mkdir(parents=True, exist_ok=True)
    dest = Destination(ARCHIVE_AE, "127.0.0.1", free_port())
    argv = [binary, "-aet", ARCHIVE_AE, "-od", str(folder), "--accept-all", str(dest.port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _echo(dest), 30, "storescp")
        yield dest
    finally:
        stop_pid(proc)
