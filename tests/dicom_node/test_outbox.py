"""The durable outbox against a real C-STORE SCP on loopback (pynetdicom, in a thread) that counts
what it stored by SOP Instance UID: delivery, back-off while the PACS is down, permanent
failures, operator retry and discard through the HTTP API, idempotent enqueue, `kill -9` of a
process delivering, job states and metrics. Fake clocks where waiting would be long."""

from __future__ import annotations

import collections
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from random import Random

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from starlette.applications import Starlette
from starlette.testclient import TestClient

from dicom_node.api import node_routes
from dicom_node.delivery import Outcome, StowRsSender, classify_status, stow_outcome
from dicom_node.jobs import JobStore, job_id
from dicom_node.metrics import NodeMetrics
from dicom_node.model import Destination, JobState
from dicom_node.outbox import ItemState, Outbox

ROOT = Path(__file__).resolve().parents[2]
PATIENT_NAME, PATIENT_ID = "OUTBOX^PATIENT", "PID-OUTBOX-4711"
STUDY, SERIES = generate_uid(), generate_uid()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Pacs:
    """A C-STORE SCP that answers `status` and counts the instances it stored (by UID)."""

    def __init__(self, port: int, status: int = 0x0000, delay_s: float = 0.0) -> None:
        self.port, self.status, self.delay_s = port, status, delay_s
        self.received: collections.Counter[str] = collections.Counter()
        self.attempts = 0
        self.allowed_calling: list[str] = []
        self._lock = threading.Lock()
        self._server = None

    def _on_store(self, event: evt.Event) -> int:
        time.sleep(self.delay_s)
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.attempts += 1
            if self.status in (0x0000, 0xB000):
                self.received[uid] += 1
        return self.status

    def start(self) -> Pacs:
        ae = AE("PACS")
        ae.require_calling_aet = self.allowed_calling
        ae.add_supported_context(SecondaryCaptureImageStorage, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def destination(self) -> Destination:
        return Destination("PACS", "127.0.0.1", self.port)


def result(uid: str | None = None) -> Dataset:
    """A small Secondary Capture 'result' with a fake patient on it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid or generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, PATIENT_ID, "OT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    return ds


def new_job(store: JobStore, model: str = "retina-vessels", run: int = 0) -> str:
    job = job_id("MODALITY", STUDY, SERIES, run, model)
    store.upsert(job, JobState.RECEIVED, calling_ae="MODALITY", study_uid=STUDY,
                 series_uid=SERIES, run=run, model=model)  # fmt: skip
    store.upsert(job, JobState.INFERRED)
    return job


def make_outbox(tmp_path: Path, destinations: list[Destination], **kwargs: object) -> Outbox:
    kwargs.setdefault("rng", Random(7))
    return Outbox(JobStore(tmp_path / "node.sqlite"), destinations, **kwargs)  # type: ignore[arg-type]


def test_job_ids_are_deterministic_and_upsert_updates(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "node.sqlite")
    job = new_job(store)
    assert job == job_id("MODALITY", STUDY, SERIES, 0, "retina-vessels")
    assert job != job_id("MODALITY", STUDY, SERIES, 1, "retina-vessels")
    new_job(store)
    assert [j.job_id for j in store.list()] == [job]
    got = store.get(job)
    assert got is not None and got.state is JobState.INFERRED and got.series_uid == SERIES
    store.upsert(job_id("A", STUDY, SERIES, 0, ""), JobState.SET_ASIDE, reason="no rule matched")
    assert store.counts()[JobState.SET_ASIDE] == 1 and store.counts()[JobState.SENT] == 0
    assert [j.state for j in store.list(JobState.SET_ASIDE)] == [JobState.SET_ASIDE]
    with pytest.raises(ValueError, match="unknown job fields"):
        store.upsert(job, JobState.FAILED, patient_name="x")


def test_status_classes() -> None:
    assert classify_status(0x0000).outcome is Outcome.SENT
    assert classify_status(0xB000).outcome is Outcome.SENT
    for status in (0xA700, 0xA7FF, 0x0213, 0xFE00):
        assert classify_status(status).outcome is Outcome.TEMPORARY
    for status in (0x0122, 0x0124, 0xA900, 0xC000, 0xCFFF, 0x0110):
        assert classify_status(status).outcome is Outcome.PERMANENT


def test_delivered_once_and_job_sent(tmp_path: Path, pacs: Pacs) -> None:
    outbox = make_outbox(tmp_path, [pacs.destination])
    store = outbox.store
    job = new_job(store)
    results = [result(), result()]
    ids = outbox.enqueue(job, results)
    assert store.get(job).state is JobState.QUEUED  # type: ignore[union-attr]
    assert all((outbox.folder / f"{r.SOPInstanceUID}.dcm").exists() for r in results)
    assert outbox.enqueue(job, results) == ids  # the same results again: no second delivery
    assert outbox.deliver_due() == 2
    assert pacs.received == {str(r.SOPInstanceUID): 1 for r in results}
    assert [item.state for item in outbox.list()] == [ItemState.SENT] * 2
    assert store.get(job).state is JobState.SENT  # type: ignore[union-attr]
    store.upsert(job, JobState.QUEUED, queued_at=5.0, results=2)  # late: keeps `sent`
    assert store.get(job).state is JobState.SENT and store.get(job).results == 2  # type: ignore[union-attr]
    store.mark_processed(["1.2.3", "1.2.4"])
    assert store.processed(["1.2.3", "9.9"]) == {"1.2.3"}
    assert not list(outbox.folder.glob("*.dcm"))  # no destination needs them any more
    assert outbox.enqueue(job, results) == ids and outbox.deliver_due() == 0
    assert store.get(job).state is JobState.SENT  # type: ignore[union-attr]
    assert sum(pacs.received.values()) == 2


def test_results_queued_ahead_are_sent_and_join_the_job_at_its_last_call(
    tmp_path: Path, pacs: Pacs
) -> None:
    outbox = make_outbox(tmp_path, [pacs.destination])
    store = outbox.store
    job = new_job(store)  # inferred, not queued yet
    early, late = result(), result()
    [early_id] = outbox.enqueue(job, [early], ahead=True)
    assert store.get(job).state is JobState.INFERRED  # type: ignore[union-attr]
    assert outbox.deliver_due() == 1 and pacs.received == {str(early.SOPInstanceUID): 1}
    assert store.get(job).state is JobState.INFERRED  # sent ahead: the job is not done yet
    ids = outbox.enqueue(job, [late], mark_queued=True, earlier=[str(early.SOPInstanceUID)])
    got = store.get(job)
    assert got is not None and got.state is JobState.QUEUED and got.results == 2
    assert {i.item_id for i in outbox.list(job_id=job)} == {early_id, *ids}
    assert outbox.deliver_due() == 1
    assert store.get(job).state is JobState.SENT  # type: ignore[union-attr]
    assert sum(pacs.received.values()) == 2  # the early one was not sent again
    with pytest.raises(ValueError, match="no outbox row"):
        outbox.enqueue(new_job(store), [result()], earlier=["1.2.999"])


def test_background_sender_delivers(tmp_path: Path, pacs: Pacs) -> None:
    outbox = make_outbox(tmp_path, [pacs.destination])
    job = new_job(outbox.store)
    outbox.start()
    try:
        outbox.enqueue(job, [result() for _ in range(3)])
        wait_for(lambda: outbox.store.get(job).state is JobState.SENT)  # type: ignore[union-attr]
    finally:
        outbox.stop()
    assert sum(pacs.received.values()) == 3 and len(pacs.received) == 3


def test_pacs_down_retried_with_back_off_then_delivered_once(tmp_path: Path) -> None:
    clock, pacs = FakeClock(), Pacs(free_port())  # nothing listens on the port yet
    outbox = make_outbox(
        tmp_path, [pacs.destination], clock=clock, base_retry_delay_s=10, max_retry_delay_s=60
    )
    job = new_job(outbox.store)
    [item_id] = outbox.enqueue(job, [result()])
    delays = []
    for attempt in range(1, 6):
        due_before = outbox.get(item_id).next_attempt_at  # type: ignore[union-attr]
        clock.now = max(clock.now, due_before)
        assert outbox.deliver_due() == 1
        assert outbox.deliver_due() == 0  # not due again yet
        item = outbox.get(item_id)
        assert item is not None and item.state is ItemState.PENDING and item.attempts == attempt
        assert "connection refused" in item.reason
        delays.append(item.next_attempt_at - clock.now)
    ceilings = [10, 20, 40, 60, 60]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert outbox.store.get(job).state is JobState.QUEUED  # type: ignore[union-attr]
    pacs.start()
    try:
        clock.advance(60)
        assert outbox.deliver_due() == 1
        assert outbox.deliver_due() == 0
    finally:
        pacs.stop()
    assert pacs.received == {outbox.get(item_id).sop_instance_uid: 1}  # type: ignore[union-attr]
    assert outbox.store.get(job).state is JobState.SENT  # type: ignore[union-attr]


def test_busy_pacs_is_temporary(tmp_path: Path, pacs: Pacs) -> None:
    pacs.status = 0xA700  # refused: out of resources
    clock = FakeClock()
    outbox = make_outbox(tmp_path, [pacs.destination], clock=clock)
    [item_id] = outbox.enqueue(new_job(outbox.store), [result()])
    outbox.deliver_due()
    assert outbox.get(item_id).state is ItemState.PENDING  # type: ignore[union-attr]
    pacs.status = 0x0000
    clock.advance(400)
    outbox.deliver_due()
    assert outbox.get(item_id).state is ItemState.SENT  # type: ignore[union-attr]
    assert pacs.attempts == 2 and sum(pacs.received.values()) == 1


def api(outbox: Outbox) -> TestClient:
    return TestClient(Starlette(routes=node_routes(outbox.store, outbox)))


def test_permanent_status_fails_until_an_operator_retries(tmp_path: Path, pacs: Pacs) -> None:
    pacs.status = 0x0122  # SOP class not supported
    clock = FakeClock()
    outbox = make_outbox(tmp_path, [pacs.destination], clock=clock)
    job = new_job(outbox.store)
    [item_id] = outbox.enqueue(job, [result()])
    outbox.deliver_due()
    clock.advance(10_000)
    assert outbox.deliver_due() == 0 and pacs.attempts == 1  # never retried by itself
    failed = outbox.store.get(job)
    assert failed is not None and failed.state is JobState.FAILED and "0x0122" in failed.reason
    client = api(outbox)
    [listed] = client.get("/dicom-node/outbox", params={"state": "failed"}).json()["items"]
    assert listed["id"] == item_id and "0x0122" in listed["reason"]
    pacs.status = 0x0000
    response = client.post(f"/dicom-node/outbox/{item_id}/retry")
    assert response.status_code == 200 and response.json()["state"] == "pending"
    assert client.get(f"/dicom-node/jobs/{job}").json()["state"] == "queued"
    assert client.post(f"/dicom-node/outbox/{item_id}/retry").status_code == 409
    outbox.deliver_due()
    assert client.get(f"/dicom-node/jobs/{job}").json()["state"] == "sent"
    assert sum(pacs.received.values()) == 1
    assert client.post(f"/dicom-node/outbox/{item_id}/discard").status_code == 409


def test_association_rejected_permanently_is_not_retried(tmp_path: Path) -> None:
    pacs = Pacs(free_port())
    pacs.allowed_calling = ["SOMEONE-ELSE"]
    pacs.start()
    try:
        clock = FakeClock()
        outbox = make_outbox(tmp_path, [pacs.destination], clock=clock)
        job = new_job(outbox.store)
        [item_id] = outbox.enqueue(job, [result()])
        outbox.deliver_due()
        clock.advance(10_000)
        assert outbox.deliver_due() == 0
    finally:
        pacs.stop()
    item = outbox.get(item_id)
    assert item is not None and item.state is ItemState.FAILED
    assert "association rejected" in item.reason and "Permanent" in item.reason
    assert outbox.store.get(job).state is JobState.FAILED  # type: ignore[union-attr]
    assert pacs.attempts == 0


def test_discard_and_the_api(tmp_path: Path, pacs: Pacs) -> None:
    down = Destination("DOWN", "127.0.0.1", free_port())
    outbox = make_outbox(tmp_path, [pacs.destination, down], clock=FakeClock())
    job = new_job(outbox.store)
    sent_id, waiting_id = outbox.enqueue(job, [result()])
    outbox.deliver_due()
    assert outbox.store.get(job).state is JobState.QUEUED  # type: ignore[union-attr]
    client = api(outbox)
    assert client.post(f"/dicom-node/outbox/{sent_id}/discard").status_code == 409
    response = client.post(f"/dicom-node/outbox/{waiting_id}/discard")
    assert response.status_code == 200 and response.json()["state"] == "discarded"
    assert not list(outbox.folder.glob("*.dcm"))
    body = client.get(f"/dicom-node/jobs/{job}").json()
    assert body["state"] == "failed" and "discarded" in body["reason"]
    assert [i["state"] for i in body["outbox"]] == ["sent", "discarded"]
    failed_jobs = client.get("/dicom-node/jobs", params={"state": "failed"}).json()["jobs"]
    assert [j["job_id"] for j in failed_jobs] == [job]
    assert client.get("/dicom-node/jobs", params={"state": "bogus"}).status_code == 400
    assert client.get("/dicom-node/outbox", params={"limit": "0"}).status_code == 400
    assert client.get("/dicom-node/jobs/nope").status_code == 404
    assert client.post("/dicom-node/outbox/999/retry").status_code == 404
    assert client.post("/dicom-node/outbox/999/discard").status_code == 404
    everything = "".join(
        client.get(path).text
        for path in ("/dicom-node/jobs", f"/dicom-node/jobs/{job}", "/dicom-node/outbox")
    )
    assert PATIENT_NAME not in everything and PATIENT_ID not in everything
    assert SERIES in everything  # UIDs are fine


def test_metrics(tmp_path: Path, pacs: Pacs) -> None:
    registry = CollectorRegistry()
    metrics = NodeMetrics(registry)
    clock = FakeClock()
    outbox = make_outbox(tmp_path, [pacs.destination], clock=clock, metrics=metrics)
    metrics.watch(outbox.store.counts, outbox.counts)
    pacs.status = 0xA700
    job = new_job(outbox.store)
    outbox.enqueue(job, [result()])
    outbox.deliver_due()
    pacs.status, clock.now = 0x0000, clock.now + 400
    outbox.deliver_due()
    dest = {"destination": str(pacs.destination)}
    sample = registry.get_sample_value
    assert sample("vision_dicom_deliveries_total", {**dest, "outcome": "sent"}) == 1
    assert sample("vision_dicom_deliveries_total", {**dest, "outcome": "temporary"}) == 1
    assert sample("vision_dicom_delivery_retries_total", dest) == 1
    assert sample("vision_dicom_delivery_latency_seconds_count", dest) == 1
    assert sample("vision_dicom_jobs", {"state": "sent"}) == 1
    assert sample("vision_dicom_jobs", {"state": "queued"}) == 0
    assert sample("vision_dicom_outbox_items", {"state": "sent"}) == 1


_DELIVERING_PROCESS = """
import sys, time
from pathlib import Path
from dicom_node.model import Destination
from dicom_node.outbox import Outbox
outbox = Outbox(Path(sys.argv[1]), [Destination.parse(sys.argv[2])])
outbox.start()
print("started", flush=True)
time.sleep(600)
"""


def test_kill_9_while_delivering_then_restart_delivers_each_once(tmp_path: Path) -> None:
    pacs = Pacs(free_port(), delay_s=0.4).start()  # slow: the kill lands mid-batch
    database = tmp_path / "node.sqlite"
    process = None
    try:
        outbox = make_outbox(tmp_path, [pacs.destination])
        job = new_job(outbox.store)
        results = [result() for _ in range(8)]
        outbox.enqueue(job, results)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-c", _DELIVERING_PROCESS, str(database), str(pacs.destination)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: pacs.attempts >= 3)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        states = collections.Counter(item.state for item in outbox.list())
        assert states[ItemState.SENT] >= 2 and states[ItemState.SENT] < 8, states
        restarted = make_outbox(tmp_path, [pacs.destination])  # resumes what was in flight
        restarted.start()
        try:
            wait_for(lambda: restarted.store.get(job).state is JobState.SENT)  # type: ignore[union-attr]
        finally:
            restarted.stop()
    finally:
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        pacs.stop()
    assert set(pacs.received) == {str(r.SOPInstanceUID) for r in results}
    # At most the one object in flight at the kill reached the PACS twice: the same UID, the
    # same object, which the PACS keeps once; no delivery was recorded twice.
    assert sum(pacs.received.values()) <= len(results) + 1
    assert [item.state for item in restarted.list()] == [ItemState.SENT] * len(results)


class _StowHandler(http.server.BaseHTTPRequestHandler):
    statuses: list[int] = []
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(self.statuses.pop(0))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


def test_stow_rs_sender(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _StowHandler.statuses[:] = [503, 200, 409]
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web/studies"
        clock = FakeClock()
        outbox = make_outbox(
            tmp_path, [Destination("STOW", "127.0.0.1", 1)], sender=StowRsSender(url), clock=clock
        )
        first = outbox.enqueue(new_job(outbox.store), [result()])
        outbox.deliver_due()  # 503: temporary
        assert outbox.get(first[0]).state is ItemState.PENDING  # type: ignore[union-attr]
        clock.advance(400)
        outbox.deliver_due()  # 200
        assert outbox.get(first[0]).state is ItemState.SENT  # type: ignore[union-attr]
        assert b"application/dicom" in _StowHandler.bodies[-1]
        second = outbox.enqueue(new_job(outbox.store, "blood-cells"), [result()])
        outbox.deliver_due()  # 409: permanent
        assert outbox.get(second[0]).state is ItemState.FAILED  # type: ignore[union-attr]
    finally:
        server.shutdown()
        server.server_close()
    assert stow_outcome(202, b'{"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", '
                        b'"Value": [42752]}}]}}').outcome is Outcome.TEMPORARY  # fmt: skip
    assert stow_outcome(202, b"{}").outcome is Outcome.SENT
