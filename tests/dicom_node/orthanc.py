"""A real PACS for the DICOM-node tests: Orthanc (Debian) on loopback with a temporary config.

Settings Orthanc 1.10.1 needs for the node's objects (checked by `test_round_trip.py`):
- BINARY SEG (1.2.840.10008.5.1.4.1.1.66.4), Comprehensive 3D SR (...88.34), GSPS (...11.1),
  Ophthalmic Photography 8 Bit (...77.1.5.1) and VL Microscopic (...77.1.2): accepted over C-STORE
  and STOW-RS with the defaults.
- Label Map SEG (...66.7, newer than Orthanc 1.10's dictionary): refused over C-STORE ("no
  acceptable presentation contexts") unless `UnknownSopClassAccepted: true`; STOW-RS stores it.
- `RemoteAccessAllowed: false` and loopback-only traffic: Orthanc 1.10 binds 0.0.0.0 on both ports
  whatever the config says. Stopped by PID.
- `OverwriteInstances: false` (the default) keeps the first copy of a resent instance, so counting
  instances in Orthanc cannot see a duplicate send: a Lua `ReceivedInstanceFilter` appends every
  SOP Instance UID that reaches Orthanc (any origin, duplicates too) to `received.log`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.dicom_node.dcmtk_tools import tool, tool_path

ROOT = Path(__file__).resolve().parents[2]
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DCMTK_TOOLS = ("echoscu", "dcmsend", "dcmdump", "dsrdump", "dcmcjpeg", "dcmcjpls", "dcmcrle")

_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  local f = io.open("{received}", "a")
  f:write(dicom.SOPInstanceUID .. "\\n")
  f:close()
  return true
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  local f = io.open("{stored}", "a")
  f:write(tags.SOPInstanceUID .. "\\n")
  f:close()
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `condition` until it is truthy (0.2 s steps); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_pid(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Stop one process we started, by its PID; SIGKILL if it does not exit in `timeout`."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def orthanc_missing() -> str:
    """Why the Orthanc tests cannot run here ('' when they can)."""
    if not Path(ORTHANC).exists():
        return f"{ORTHANC} missing: scripts/setup.sh installs orthanc with apt (dev extra)"
    if not Path(DICOMWEB_PLUGIN).exists():
        return "Orthanc's DICOMweb plugin missing: apt-get install orthanc-dicomweb"
    return ""


def dcmtk_missing() -> str:
    """Why the dcmtk tests cannot run here ('' when they can)."""
    absent = [name for name in DCMTK_TOOLS if tool_path(name) is None]
    return f"dcmtk tools missing ({', '.join(absent)}): apt-get install dcmtk" if absent else ""


@dataclass(frozen=True)
class StoredInstance:
    """One instance Orthanc holds."""

    orthanc_id: str
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    modality: str


@dataclass
class Orthanc:
    """A running (or stopped) Orthanc; `stop()` then `start()` keeps its storage."""

    root: Path
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    unknown_sop_class_accepted: bool = True
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def destination(self) -> str:
        """`AE@host:port`, as the node's `--dicom-destination` takes it."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def received_log(self) -> Path:
        return self.root / "received.log"

    @property
    def stored_log(self) -> Path:
        return self.root / "stored.log"

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    def config(self) -> dict:
        storage = self.root / "storage"
        return {
            "Name": "vision-tests",
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "UnknownSopClassAccepted": self.unknown_sop_class_accepted,
            "LuaScripts": [str(self.root / "received.lua")],
            "SaveJobs": False,
            "DicomScuTimeout": 30,
            "DicomAssociationCloseDelay": 0,
        }

    def start(self, timeout: float = 90) -> None:
        """Start Orthanc and wait until `/system` answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        lua = _LUA.format(received=self.received_log, stored=self.stored_log)
        (self.root / "received.lua").write_text(lua)
        config = self.root / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [ORTHANC, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        wait_for(self._answers, timeout, f"Orthanc on {self.url} (log: {self.log_path})")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {self.log_path.read_text()[-3000:]}")
        try:
            return bool(self.get("/system", timeout=5).get("Version"))
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)

    # REST helpers ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float = 120,
        content_type: str = "application/json",
    ) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.read()

    def get(self, path: str, timeout: float = 120) -> object:
        return json.loads(self.request("GET", path, timeout=timeout))

    def post(self, path: str, payload: object, timeout: float = 300) -> object:
        return json.loads(self.request("POST", path, json.dumps(payload).encode(), timeout))

    def upload(self, dicom: Path | bytes) -> dict:
        """`POST /instances`: store a file; Orthanc's answer (ID, ParentStudy, Status...)."""
        data = dicom.read_bytes() if isinstance(dicom, Path) else dicom
        out = self.request("POST", "/instances", data, content_type="application/dicom")
        return json.loads(out)

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's ID of a study, by Study Instance UID (None when absent)."""
        found = self.post(
            "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        )
        return found[0] if found else None

    def push(self, modality: str, resources: list[str], timeout: float = 300) -> dict:
        """`POST /modalities/{id}/store`, synchronous: C-STORE the resources to a modality."""
        body = {"Resources": resources, "Synchronous": True}
        return self.post(f"/modalities/{modality}/store", body, timeout)

    def push_study(self, modality: str, study_uid: str, timeout: float = 300) -> dict:
        study = self.study_id(study_uid)
        assert study, f"study {study_uid} not in Orthanc"
        return self.push(modality, [study], timeout)

    def instances(self, study_uid: str) -> list[StoredInstance]:
        """The instances of a study with their SOP class (empty when the study is absent)."""
        study = self.study_id(study_uid)
        if study is None:
            return []
        out = []
        for inst in self.get(f"/studies/{study}/instances"):
            meta = self.get(f"/instances/{inst['ID']}/metadata?expand")
            series = self.get(f"/series/{inst['ParentSeries']}")["MainDicomTags"]
            out.append(
                StoredInstance(
                    inst["ID"],
                    inst["MainDicomTags"]["SOPInstanceUID"],
                    meta.get("SopClassUid", ""),
                    series.get("SeriesInstanceUID", ""),
                    series.get("Modality", ""),
                )
            )
        return out

    def download(self, orthanc_id: str) -> bytes:
        """`GET /instances/{id}/file`: the stored DICOM file."""
        return self.request("GET", f"/instances/{orthanc_id}/file")

    def receptions(self) -> list[str]:
        """Every SOP Instance UID that reached Orthanc, in order, duplicates included."""
        if not self.received_log.exists():
            return []
        return self.received_log.read_text().split()

    def stored(self) -> list[str]:
        """SOP Instance UIDs Orthanc stored (new instances only), in order."""
        if not self.stored_log.exists():
            return []
        return self.stored_log.read_text().split()

    def delete_all(self) -> None:
        for study in self.get("/studies"):
            self.request("DELETE", f"/studies/{study}")


@contextmanager
def running_orthanc(
    root: Path,
    modalities: dict[str, tuple[str, str, int]] | None = None,
    unknown_sop_class_accepted: bool = True,
) -> Iterator[Orthanc]:
    """A real Orthanc on free loopback ports, storage under `root`; stopped by PID at the end.

    `modalities`: Orthanc's `DicomModalities` (id -> (AE title, host, port)), e.g. the node.
    """
    reason = orthanc_missing()
    if reason:
        import pytest

        pytest.skip(reason)
    pacs = Orthanc(
        root,
        free_port(),
        free_port(),
        modalities=dict(modalities or {}),
        unknown_sop_class_accepted=unknown_sop_class_accepted,
    )
    try:
        pacs.start()
        yield pacs
    finally:
        pacs.stop()


def http_error_text(error: urllib.error.HTTPError) -> str:
    return f"HTTP {error.code}: {error.read()[:500]!r}"


# The node as a process (`python -m app serve | dicom-node run`), stopped by PID -------------------

NODE_AE = "VISION"
MODELS = ROOT / "models"
NODE_MODELS = ("retina-vessels", "blood-cells")


def node_models(folder: Path) -> Path:
    """A model repository with only the models the bundled rules route to (links, no copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in NODE_MODELS:
        link = folder / name
        if not link.exists():
            link.symlink_to(MODELS / name, target_is_directory=True)
    return folder


@dataclass
class NodeProcess:
    """`vision serve --dicom-port ...` (or `vision dicom-node run`) as a subprocess."""

    root: Path
    models: Path
    destination: str
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    idle_s: float = 2.0
    log_level: str = "INFO"
    command: str = "dicom-node"  # or "serve" (gRPC on a free port too)
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_path(self) -> Path:
        return self.root / "node.log"

    def argv(self) -> list[str]:
        head = (
            ["serve", "--grpc-port", str(free_port())]
            if self.command == "serve"
            else ["dicom-node", "run"]
        )
        return [
            sys.executable,
            "-m",
            "app",
            *head,
            "--models",
            str(self.models),
            "--http-port",
            str(self.http_port),
            "--dicom-port",
            str(self.dicom_port),
            "--ae-title",
            NODE_AE,
            "--dicom-destination",
            self.destination,
            "--dicom-state-dir",
            str(self.state_dir),
            "--dicom-idle-s",
            str(self.idle_s),
            "--log-level",
            self.log_level,
            *self.extra,
        ]

    def start(self, timeout: float = 240) -> None:
        """Start the node and wait until its job API answers and it accepts a C-ECHO."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        self.starts += 1
        wait_for(self._ready, timeout, f"the DICOM node (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the node exited: {self.log_path.read_text()[-4000:]}")
        try:
            self.get("/dicom-node/jobs", timeout=5)
        except (OSError, ValueError):
            return False
        return echo(self.dicom_port)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_pid(self.proc, sig) if self.proc is not None else 0

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def get(self, path: str, timeout: float = 60) -> object:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/dicom-node") else body.decode()

    def jobs(self) -> list[dict]:
        return self.get("/dicom-node/jobs?limit=1000")["jobs"]

    def outbox(self) -> list[dict]:
        return self.get("/dicom-node/outbox?limit=1000")["items"]


def echo(port: int, called_ae: str = NODE_AE, timeout: float = 30) -> bool:
    """dcmtk `echoscu` against a DICOM port: True when the C-ECHO succeeds."""
    done = subprocess.run(
        [tool("echoscu"), "-aec", called_ae, "-to", "10", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=timeout,
    )
    return done.returncode == 0


def dcmsend(port: int, files: list[Path], called_ae: str = NODE_AE, timeout: float = 300) -> str:
    """dcmtk `dcmsend` (any SOP class and transfer syntax, no flags); asserts every file got a
    SUCCESS status (dcmsend's exit status alone is 0 when no association could be negotiated)."""
    done = subprocess.run(
        [
            tool("dcmsend"),
            "-v",
            "-aec",
            called_ae,
            "-to",
            "60",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = done.stdout + done.stderr
    match = re.search(r"with status SUCCESS\s*:\s*(\d+)", out)
    sent = int(match[1]) if match else 0
    assert done.returncode == 0 and sent == len(files), (
        f"dcmsend rc={done.returncode}: {out[-2000:]}"
    )
    return out


@contextmanager
def running_node(node: NodeProcess) -> Iterator[NodeProcess]:
    try:
        node.start()
        yield node
    finally:
        node.stop()
