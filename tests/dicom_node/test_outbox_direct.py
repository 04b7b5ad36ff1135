"""`Outbox.enqueue(send_now=True)` against a real C-STORE SCP on loopback (pynetdicom, in a thread,
counting what it stored): the results are sent while they are written and their rows committed
with the outcomes; whatever a destination did not take is durable in the outbox and queued."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from dicom_node.delivery import Delivery, Outcome
from dicom_node.model import Destination, JobState
from dicom_node.outbox import ItemState, Outbox
from tests.dicom_node.test_outbox import (
    FakeClock,
    Pacs,
    free_port,
    make_outbox,
    new_job,
    result,
    wait_for,
)


def files_in(outbox: Outbox) -> list[str]:
    """Every file in the outbox folder, partial ones included."""
    return sorted(p.name for p in outbox.folder.iterdir())


def test_sent_while_written_recorded_sent_and_no_file_kept(tmp_path: Path, pacs: Pacs) -> None:
    outbox = make_outbox(tmp_path, [pacs.destination])
    job = new_job(outbox.store)
    results = [result(), result(), result()]
    ids = outbox.enqueue(job, results, mark_queued=True, send_now=True)
    assert pacs.received == {str(r.SOPInstanceUID): 1 for r in results}
    got = outbox.store.get(job)
    assert got is not None and got.state is JobState.SENT and got.results == 3
    assert got.queued_at > 0
    items = outbox.list(job_id=job)
    assert [i.item_id for i in items] == ids
    assert [(i.state, i.attempts) for i in items] == [(ItemState.SENT, 1)] * 3
    assert files_in(outbox) == []  # no destination needs them: never renamed in, no partial left
    assert outbox.deliver_due() == 0
    assert outbox.enqueue(job, results, mark_queued=True, send_now=True) == ids  # known: queued
    assert outbox.deliver_due() == 0 and sum(pacs.received.values()) == 3


def test_pacs_down_the_files_are_durable_and_retried(tmp_path: Path) -> None:
    clock, pacs = FakeClock(), Pacs(free_port())  # nothing listens yet
    outbox = make_outbox(tmp_path, [pacs.destination], clock=clock)
    job = new_job(outbox.store)
    results = [result(), result()]
    outbox.enqueue(job, results, mark_queued=True, send_now=True)
    items = outbox.list(job_id=job)
    assert [(i.state, i.attempts) for i in items] == [(ItemState.PENDING, 1)] * 2
    assert all("connection refused" in i.reason and i.next_attempt_at > clock.now for i in items)
    assert files_in(outbox) == sorted(f"{r.SOPInstanceUID}.dcm" for r in results)
    assert outbox.store.get(job).state is JobState.QUEUED  # type: ignore[union-attr]
    pacs.start()
    try:
        assert outbox.deliver_due() == 0  # in back-off
        clock.advance(10)
        assert outbox.deliver_due() == 2
    finally:
        pacs.stop()
    assert pacs.received == {str(r.SOPInstanceUID): 1 for r in results}
    assert outbox.store.get(job).state is JobState.SENT  # type: ignore[union-attr]
    assert files_in(outbox) == []


def test_a_destination_with_results_waiting_keeps_its_queue_order(
    tmp_path: Path, pacs: Pacs
) -> None:
    outbox = make_outbox(tmp_path, [pacs.destination])
    earlier = new_job(outbox.store, run=1)
    outbox.enqueue(earlier, [result()])  # pending, not sent yet
    job = new_job(outbox.store, run=2)
    outbox.enqueue(job, [result()], mark_queued=True, send_now=True)
    assert sum(pacs.received.values()) == 0  # queued behind the earlier job, not sent at once
    assert [i.attempts for i in outbox.list(job_id=job)] == [0]
    assert outbox.deliver_due() == 2
    assert outbox.store.get(job).state is JobState.SENT  # type: ignore[union-attr]


def test_one_destination_up_one_down(tmp_path: Path, pacs: Pacs) -> None:
    down = Destination("DOWN", "127.0.0.1", free_port())
    clock = FakeClock()
    outbox = make_outbox(tmp_path, [pacs.destination, down], clock=clock)
    job = new_job(outbox.store)
    one = result()
    outbox.enqueue(job, [one], mark_queued=True, send_now=True)
    states = {i.destination: (i.state, i.attempts) for i in outbox.list(job_id=job)}
    assert states == {str(pacs.destination): (ItemState.SENT, 1), str(down): (ItemState.PENDING, 1)}
    assert files_in(outbox) == [f"{one.SOPInstanceUID}.dcm"]  # still needed by DOWN
    assert outbox.store.get(job).state is JobState.QUEUED  # type: ignore[union-attr]
    assert pacs.received == {str(one.SOPInstanceUID): 1}


def test_permanent_failure_is_failed_with_its_file_for_the_operator(
    tmp_path: Path, pacs: Pacs, caplog: pytest.LogCaptureFixture
) -> None:
    pacs.status = 0x0122  # SOP class not supported
    outbox = make_outbox(tmp_path, [pacs.destination], clock=FakeClock())
    job = new_job(outbox.store)
    with caplog.at_level(logging.WARNING, logger="dicom_node.outbox"):
        [item_id] = outbox.enqueue(job, [result()], mark_queued=True, send_now=True)
    assert f"delivery {item_id} to {pacs.destination} failed" in caplog.text  # its row's id
    item = outbox.get(item_id)
    assert item is not None and item.state is ItemState.FAILED and "0x0122" in item.reason
    assert item.path.exists()
    assert outbox.store.get(job).state is JobState.FAILED  # type: ignore[union-attr]
    pacs.status = 0x0000
    outbox.retry(item_id)
    assert outbox.deliver_due() == 1
    assert outbox.store.get(job).state is JobState.SENT  # type: ignore[union-attr]


def test_a_result_that_cannot_be_written_leaves_no_row_and_no_file(
    tmp_path: Path, pacs: Pacs
) -> None:
    outbox = make_outbox(tmp_path, [pacs.destination])
    job = new_job(outbox.store)
    good, bad = result(), result()
    with pytest.warns(UserWarning):
        bad.add_new(0x00280010, "US", "not a number")  # Rows: pydicom's writer raises on it
    with pytest.raises(OSError, match="not an integer"):
        outbox.enqueue(job, [good, bad], mark_queued=True, send_now=True)
    assert outbox.list() == [] and files_in(outbox) == []
    assert str(bad.SOPInstanceUID) not in pacs.received
    assert outbox.store.get(job).state is JobState.INFERRED  # type: ignore[union-attr]


class BrokenSender:
    """Delivers the first item, then raises (a sender bug)."""

    def send(self, destination: Destination, items: list) -> object:
        yield items[0], Delivery(Outcome.SENT)
        raise RuntimeError("sender bug")


def test_a_sender_that_fails_midway_leaves_the_rest_queued(tmp_path: Path) -> None:
    dest = Destination("FAKE", "127.0.0.1", free_port())
    outbox = make_outbox(tmp_path, [dest], sender=BrokenSender())
    job = new_job(outbox.store)
    first, second = result(), result()
    outbox.enqueue(job, [first, second], mark_queued=True, send_now=True)
    items = {i.sop_instance_uid: (i.state, i.attempts) for i in outbox.list(job_id=job)}
    assert items == {
        str(first.SOPInstanceUID): (ItemState.SENT, 1),
        str(second.SOPInstanceUID): (ItemState.PENDING, 0),
    }
    assert files_in(outbox) == [f"{second.SOPInstanceUID}.dcm"]
    assert outbox.store.get(job).state is JobState.QUEUED  # type: ignore[union-attr]


class CountingPacs(Pacs):
    """`Pacs` that also counts the associations it accepted and those released."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.associations = 0
        self.released = 0

    def start(self) -> CountingPacs:
        ae = AE("PACS")
        ae.add_supported_context(SecondaryCaptureImageStorage, ALL_TRANSFER_SYNTAXES)
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._count),
            (evt.EVT_RELEASED, self._count),
        ]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def _count(self, event: evt.Event) -> None:
        if event.event is evt.EVT_ACCEPTED:
            self.associations += 1
        else:
            self.released += 1


@pytest.fixture
def counting() -> Iterator[CountingPacs]:
    server = CountingPacs(free_port()).start()
    try:
        yield server
    finally:
        server.stop()


CONTEXTS = [(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)]


def test_the_association_opened_while_results_are_built_carries_them(
    tmp_path: Path, counting: CountingPacs
) -> None:
    outbox = make_outbox(tmp_path, [counting.destination])
    job = new_job(outbox.store)
    outbox.warm(job, CONTEXTS)
    wait_for(lambda: counting.associations == 1)  # opened before any result exists
    results = [result(), result()]
    outbox.enqueue(job, results, mark_queued=True, send_now=True)
    assert counting.received == {str(r.SOPInstanceUID): 1 for r in results}
    assert outbox.store.get(job).state is JobState.SENT  # type: ignore[union-attr]
    wait_for(lambda: counting.released == 1)
    assert counting.associations == 1  # the same association, released after the last object
    outbox.cool(job)  # nothing left to release
    outbox.stop()
    assert counting.released == 1


def test_an_unused_association_is_released_and_a_busy_destination_gets_none(
    tmp_path: Path, counting: CountingPacs
) -> None:
    outbox = make_outbox(tmp_path, [counting.destination])
    job = new_job(outbox.store)
    outbox.warm(job, CONTEXTS)
    wait_for(lambda: counting.associations == 1)
    outbox.cool(job)  # the job failed before its results: the association is given back
    wait_for(lambda: counting.released == 1)
    outbox.enqueue(new_job(outbox.store, run=1), [result()])  # waiting: the destination is busy
    outbox.warm(job, CONTEXTS)
    outbox.stop()  # joins the opener
    assert counting.associations == 1


def test_an_association_lacking_a_context_is_replaced(
    tmp_path: Path, counting: CountingPacs
) -> None:
    outbox = make_outbox(tmp_path, [counting.destination])
    job = new_job(outbox.store)
    outbox.warm(job, [(SecondaryCaptureImageStorage, ImplicitVRLittleEndian)])
    wait_for(lambda: counting.associations == 1)
    one = result()  # Explicit VR Little Endian: not proposed ahead
    outbox.enqueue(job, [one], mark_queued=True, send_now=True)
    assert counting.received == {str(one.SOPInstanceUID): 1}
    assert counting.associations == 2
    wait_for(lambda: counting.released == 2)
    outbox.stop()
