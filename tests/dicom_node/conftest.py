"""Shared fixtures of the DICOM-node tests (additive: each fixture stands alone)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_node.model import NodeSettings, SpooledInstance
from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
from tests.dicom_node.dcmtk_tools import tool, tool_path


def pydicom_file(name: str) -> Path:
    """A file of pydicom's bundled test data (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom test file {name} missing"
    return Path(path)


def need_tools(*tools: str) -> None:
    """Skip when a dcmtk tool is not installed (`apt-get install dcmtk`)."""
    missing = [tool for tool in tools if tool_path(tool) is None]
    if missing:
        pytest.skip(f"dcmtk tools missing: {', '.join(missing)}")


def dcmtk(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk command line (waits for it; it ends by itself)."""
    need_tools(str(args[0]))
    command = [tool(str(args[0])), *(str(a) for a in args[1:])]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class RunningSCP:
    """A started StorageSCP with what its callbacks heard."""

    scp: StorageSCP
    spool: Spool
    port: int
    instances: list[SpooledInstance] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    heard: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def start_scp(tmp_path: Path) -> Iterator[Callable[..., RunningSCP]]:
    """Start a StorageSCP on loopback (free port) with its spool under tmp_path; stopped after."""
    started: list[StorageSCP] = []

    def start(**settings: object) -> RunningSCP:
        state = tmp_path / f"state{len(started)}"
        options: dict[str, object] = {"host": "127.0.0.1", "port": 0, "min_free_disk_mb": 1}
        options.update(settings)
        node = NodeSettings(state_dir=state, **options)  # type: ignore[arg-type]
        spool = Spool(state / "spool")
        running = RunningSCP(scp=None, spool=spool, port=0)  # type: ignore[arg-type]

        def on_instance(instance: SpooledInstance) -> None:
            running.instances.append(instance)
            running.heard.set()

        running.scp = StorageSCP(node, spool, on_instance, running.released.append)
        started.append(running.scp)
        running.port = running.scp.start()
        return running

    try:
        yield start
    finally:
        for scp in started:
            scp.stop()


def read_pixels(path: Path) -> object:
    """The pixel array of a DICOM file."""
    return pydicom.dcmread(path).pixel_array


@pytest.fixture
def pacs() -> Iterator[object]:
    """A loopback C-STORE SCP counting what it stored (`test_outbox.Pacs`), stopped after."""
    from tests.dicom_node.test_outbox import Pacs, free_port

    server = Pacs(free_port()).start()
    try:
        yield server
    finally:
        server.stop()
