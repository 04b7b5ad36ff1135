"""The persistent outbox: result objects wait here, on disk and in SQLite, until each destination
has acknowledged them.

`enqueue` writes each object to `state_dir/outbox/<SOP Instance UID>.dcm` (fsync, atomic rename,
several files at once; the folder fsynced once for all of them) and, in one transaction, a row per
(object, destination); the pair is unique, so enqueueing the same result again (result UIDs are
deterministic) adds no second delivery. A sender thread claims due rows (`pending` -> `sending`,
committed), sends them and records each outcome in its own transaction before the next object
goes out (a success without fsync: it survives `kill -9`, and one lost to a power cut is sent
again): `sent` after a success status only; a temporary failure goes back to `pending` with
exponential back-off and jitter, capped; a permanent one is `failed` until an operator retries or
discards it. Rows still `sending` when the process died (`kill -9`) are sent again on restart:
delivery is at least once on the wire, and the receiver keeps one object per SOP Instance UID, so
a resend is never a second object, and no delivery is ever recorded twice. The jobs the rows
belong to follow (`queued` -> `sent` or `failed`). A job's last results may instead be sent while
they are written and recorded with their outcomes (`enqueue(send_now=True)`,
`dicom_node.outbox_direct`): a crash before that commit runs the job again from the spool.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node import outbox_rows as rows
from dicom_node.delivery import (
    Contexts,
    Delivery,
    ItemState,
    OutboxItem,
    Outcome,
    Sender,
    StoreScuSender,
)
from dicom_node.jobs import Database, JobStore, upsert_job
from dicom_node.metrics import NodeMetrics
from dicom_node.model import Destination, JobState
from dicom_node.outbox_direct import WrittenFiles, release_when_opened, send_while_written
from dicom_node.outbox_rows import OutboxStateError
from dicom_node.writer import file_bytes

__all__ = ["ItemState", "Outbox", "OutboxItem", "OutboxStateError"]

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9.]{1,64}$")
WRITERS = 8  # threads writing (and fsyncing) one enqueue's files
_UNSENT = Delivery(Outcome.TEMPORARY, "not attempted")


class Outbox:
    """Durable delivery of result objects to the configured destinations (module docstring)."""

    def __init__(
        self,
        store: JobStore | Path,
        destinations: Sequence[Destination],
        sender: Sender | None = None,
        max_retry_delay_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        *,
        base_retry_delay_s: float = 1.0,
        batch_size: int = 64,
        poll_s: float = 1.0,
        metrics: NodeMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store if isinstance(store, JobStore) else JobStore(Path(store), clock)
        self.db: Database = self.store.database
        self.folder = self.db.path.parent / "outbox"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.destinations = {str(d): d for d in destinations}
        self.sender: Sender = sender or StoreScuSender()
        self.max_retry_delay_s, self.base_retry_delay_s = max_retry_delay_s, base_retry_delay_s
        self.clock, self.batch_size, self.poll_s = clock, batch_size, poll_s
        self.metrics, self._rng = metrics, rng or random.Random()
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._warm: dict[str, dict[str, Future]] = {}  # job -> destination -> association
        self._warm_lock = threading.Lock()
        self._openers: ThreadPoolExecutor | None = None
        self.db.executescript(rows.SCHEMA)
        self._resume_in_flight()

    # -- enqueue -------------------------------------------------------------------------------

    def enqueue(
        self,
        job_id: str,
        datasets: Sequence[pydicom.Dataset],
        *,
        mark_queued: bool = False,
        ahead: bool = False,
        earlier: Sequence[str] = (),
        send_now: bool = False,
    ) -> list[int]:
        """Queue `datasets` (the job's results) for every destination; the deliveries' ids.

        Idempotent per (SOP Instance UID, destination): an object already queued, sent, failed
        or discarded keeps its row and id. The job becomes `queued` (then follows its items);
        with `mark_queued`, the same commit also records the job's `queued_at` and `results`.
        `ahead=True` queues objects before the rest of their job is built (sent at once, the
        job's state untouched, the rows not yet the job's); the job's last call names them in
        `earlier` (SOP Instance UIDs) and they become its rows in that commit. A job that fails
        before its last call keeps the objects sent ahead (each is complete on its own).
        A dataset without a file meta Transfer Syntax UID gets Explicit VR Little Endian.
        `send_now=True` (not with `ahead`): objects new to the outbox are sent, to each
        destination with nothing waiting, while they are written, and their rows committed with
        the outcomes (`dicom_node.outbox_direct`); the others are queued as usual.
        """
        if not self.destinations:
            if not ahead:
                self.store.upsert(job_id, JobState.FAILED, reason="no destination configured")
            return []
        direct = self._direct_destinations(datasets) if send_now and not ahead else []
        if direct:
            return self._enqueue_sending(job_id, datasets, direct, mark_queued, earlier)
        written = self._write_all(datasets)
        if written:  # the renames durable (one folder fsync) before any row names the files
            _fsync_path(self.folder)
        now = self.clock()
        with self.db.transaction() as conn:
            ids = [
                rows.insert(conn, job_id, entry, dest, now, link=not ahead)
                for entry in written
                for dest in self.destinations
            ]
            if not ahead:
                results = len(datasets) + len(earlier)
                self._queue_job(conn, job_id, earlier, results, now, now, mark_queued)
        self._remove_finished({entry[0] for entry in written})
        self._wake.set()
        return ids

    def _write_all(self, datasets: Sequence[pydicom.Dataset]) -> list[tuple[str, str, str]]:
        """`_write` each dataset, several at once: the fsyncs overlap (the file system commits
        them together) instead of one disk flush after another."""
        if len(datasets) <= 1:
            return [self._write(dataset) for dataset in datasets]
        with ThreadPoolExecutor(min(WRITERS, len(datasets)), "outbox-write") as pool:
            return list(pool.map(self._write, datasets))

    def _write(self, dataset: pydicom.Dataset) -> tuple[str, str, str]:
        """Write `dataset` durably to the outbox folder: (SOP Instance UID, class, syntax)."""
        entry = _entry(dataset)
        partial = self._partial(entry[0])
        self._write_partial(dataset, partial, durable=True)
        os.replace(partial, self._path(entry[0]))  # the caller fsyncs the folder before the rows
        return entry

    def _write_partial(self, dataset: pydicom.Dataset, partial: Path, *, durable: bool) -> None:
        """`dataset` as the file `partial`, fsynced when `durable`."""
        try:
            with open(partial, "wb") as file:
                file.write(file_bytes(dataset))  # pydicom's bytes, written faster
                if durable:
                    file.flush()
                    os.fsync(file.fileno())
        except BaseException:  # a full disk, say: no half-written file left holding space
            partial.unlink(missing_ok=True)
            raise

    # -- sent while written (`dicom_node.outbox_direct`) -----------------------------------------

    def _direct_destinations(self, datasets: Sequence[pydicom.Dataset]) -> list[str]:
        """The destinations to send `datasets` to at once: none if any of them has a row
        already (it is the queue's), else those with nothing waiting (order kept; one in
        back-off is not waited on)."""
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        if not uids:
            return []
        with self.db.reading() as conn:
            if rows.any_row(conn, uids):
                return []
            return [dest for dest in self.destinations if not rows.busy(conn, dest)]

    def warm(self, job_id: str, contexts: Contexts) -> None:
        """Open, in the background, an association proposing `contexts` to each destination with
        nothing waiting, for job `job_id`'s `enqueue(send_now=True)` (its results are built
        meanwhile); `cool` releases what that call did not use. Senders without `open` skip it."""
        opener = getattr(self.sender, "open", None)
        if opener is None:
            return
        with self._warm_lock:  # no I/O here: the caller may be the event loop
            if self._openers is None:
                self._openers = ThreadPoolExecutor(4, "outbox-open")
            submit = self._openers.submit
            opening = {
                d: submit(self._open_if_idle, opener, d, contexts) for d in self.destinations
            }
            for left in self._warm.pop(job_id, {}).values():
                release_when_opened(left)
            self._warm[job_id] = opening

    def _open_if_idle(
        self, opener: Callable[[Destination, Contexts], object], dest: str, contexts: Contexts
    ) -> object:
        """`opener(destination, contexts)` unless the destination has rows waiting (None)."""
        with self.db.reading() as conn:
            if rows.busy(conn, dest):
                return None
        return opener(self.destinations[dest], contexts)

    def cool(self, job_id: str) -> None:
        """Release the associations opened for job `job_id` and not used (`warm`)."""
        for opened in self._take_warm(job_id).values():
            release_when_opened(opened)

    def _take_warm(self, job_id: str) -> dict[str, Future]:
        with self._warm_lock:
            return self._warm.pop(job_id, {})

    def _enqueue_sending(
        self,
        job_id: str,
        datasets: Sequence[pydicom.Dataset],
        direct: list[str],
        mark_queued: bool,
        earlier: Sequence[str],
    ) -> list[int]:
        """`enqueue(send_now=True)`: write and send at once, then the rows with the outcomes."""
        entries = [_entry(ds) for ds in datasets]
        partials = [self._partial(uid) for uid, _, _ in entries]
        started = self.clock()
        batches = {
            dest: [
                OutboxItem(
                    item_id=0,  # no row yet
                    job_id=job_id,
                    sop_instance_uid=uid,
                    sop_class_uid=sop_class,
                    transfer_syntax=syntax,
                    destination=dest,
                    path=partial,
                    state=ItemState.SENDING,
                    attempts=0,
                    next_attempt_at=started,
                    reason="",
                    created_at=started,
                    updated_at=started,
                )
                for (uid, sop_class, syntax), partial in zip(entries, partials, strict=True)
            ]
            for dest in direct
        }
        opened = self._take_warm(job_id)
        try:
            written_at, steps = self._write_and_send(datasets, entries, partials, batches, opened)
            outcomes = {(i.sop_instance_uid, i.destination): d for i, d in steps}
            keep = [
                (entry, partial)
                for entry, partial in zip(entries, partials, strict=True)
                if any(
                    outcomes.get((entry[0], dest), _UNSENT).outcome is not Outcome.SENT
                    for dest in self.destinations
                )
            ]
            for entry, partial in keep:  # durable before a row names them
                _fsync_path(partial)
                os.replace(partial, self._path(entry[0]))
            if keep:
                _fsync_path(self.folder)
        finally:
            for partial in partials:  # sent everywhere (or the write failed): not needed
                partial.unlink(missing_ok=True)
        ids = self._commit_sent(job_id, entries, outcomes, written_at, mark_queued, earlier)
        for item, delivery in steps:
            row = ids[(item.sop_instance_uid, item.destination)]
            self._observe(dataclasses.replace(item, item_id=row), delivery)
        if keep:
            self._wake.set()
        return list(ids.values())

    def _write_and_send(
        self,
        datasets: Sequence[pydicom.Dataset],
        entries: list[tuple[str, str, str]],
        partials: list[Path],
        batches: dict[str, list[OutboxItem]],
        opened: dict[str, Future],
    ) -> tuple[float, list[tuple[OutboxItem, Delivery]]]:
        """Write the files one after another (not fsynced) while a thread per destination sends
        each as soon as it is complete, on the association `warm` opened for it if any:
        (when the last was written, every outcome)."""
        files = WrittenFiles([uid for uid, _, _ in entries])
        sends = [
            send_while_written(self.sender, self.destinations[d], batch, files, opened.pop(d, None))
            for d, batch in batches.items()
        ]
        for unused in opened.values():  # a destination that got busy meanwhile
            release_when_opened(unused)
        try:
            for dataset, (uid, _, _), partial in zip(datasets, entries, partials, strict=True):
                self._write_partial(dataset, partial, durable=False)
                files.done(uid)
        except BaseException:
            files.fail()  # the senders stop
            for outcomes in sends:
                outcomes()
            raise
        written_at = self.clock()
        return written_at, [step for outcomes in sends for step in outcomes()]

    def _commit_sent(
        self,
        job_id: str,
        entries: list[tuple[str, str, str]],
        outcomes: dict[tuple[str, str], Delivery],
        queued_at: float,
        mark_queued: bool,
        earlier: Sequence[str],
    ) -> dict[tuple[str, str], int]:
        """The rows of `entries` for every destination, with the outcomes already known (the
        others pending, due now), and the job's, in one transaction; fsynced unless all sent.
        Their ids by (SOP Instance UID, destination), in `enqueue`'s order."""
        now = self.clock()
        all_sent = len(outcomes) == len(entries) * len(self.destinations) and all(
            d.outcome is Outcome.SENT for d in outcomes.values()
        )
        with self.db.transaction(durable=not all_sent) as conn:
            ids = {}
            for entry in entries:
                for dest in self.destinations:
                    item_id = rows.insert(conn, job_id, entry, dest, queued_at)
                    delivery = outcomes.get((entry[0], dest))
                    if delivery is not None:
                        state, due = self._after(delivery, 1, now)
                        rows.record(conn, item_id, state, 1, due, delivery.reason, now)
                    ids[(entry[0], dest)] = item_id
            results = len(entries) + len(earlier)
            self._queue_job(conn, job_id, earlier, results, queued_at, now, mark_queued)
        return ids

    def _queue_job(
        self,
        conn,
        job_id: str,
        earlier: Sequence[str],
        results: int,
        queued_at: float,
        now: float,
        mark_queued: bool,
    ) -> None:
        """In `conn`'s transaction: the objects sent `earlier` become the job's rows, and the job
        is `queued` (with `queued_at` and its result count when `mark_queued`), then follows
        its rows."""
        for uid in earlier:
            for dest in self.destinations:
                rows.link(conn, job_id, uid, dest)
        marks = {"queued_at": queued_at, "results": results} if mark_queued else {}
        upsert_job(conn, job_id, JobState.QUEUED, now, reason="", **marks)
        rows.settle(conn, job_id, now)

    # -- delivery ------------------------------------------------------------------------------

    def deliver_due(self) -> int:
        """Send every item due now, batch by batch; how many attempts were made."""
        attempts = 0
        while not self._stopping.is_set():
            claimed = self._claim()
            if claimed is None:
                return attempts
            attempts += self._send_batch(*claimed)
        return attempts

    def _claim(self) -> tuple[str, list[OutboxItem]] | None:
        """Mark the next batch due for one destination `sending` (committed) and return it."""
        # not fsynced: a claim lost to a power cut leaves the rows pending, as `resume` would
        with self.db.transaction(durable=False) as conn:
            claimed = rows.claim(conn, self.clock(), self.batch_size)
        items = [self._item(row) for row in claimed]
        return (items[0].destination, items) if items else None

    def _send_batch(self, destination: str, items: list[OutboxItem]) -> int:
        """Send one claimed batch, recording each outcome as it comes."""
        pending = {item.item_id: item for item in items}
        target = self.destinations.get(destination)
        outcomes: Iterator[tuple[OutboxItem, Delivery]] = (
            self.sender.send(target, items)
            if target
            else iter(
                [
                    (i, Delivery(Outcome.PERMANENT, "destination no longer configured"))
                    for i in items
                ]
            )
        )
        try:
            while not self._stopping.is_set():
                try:
                    step = next(outcomes, None)
                except Exception as error:  # a sender bug: no row left `sending`, no endless retry
                    log.exception("sender failed on a batch for %s", destination)
                    failure = Delivery(Outcome.PERMANENT, f"sender error: {type(error).__name__}")
                    for item in list(pending.values()):
                        self._record(item, failure)
                        pending.pop(item.item_id)
                    break
                if step is None:
                    break
                self._record(*step)
                pending.pop(step[0].item_id, None)
            if pending and not self._stopping.is_set():  # a sender that skipped items
                for item in list(pending.values()):
                    self._record(item, Delivery(Outcome.PERMANENT, "no outcome from the sender"))
                    pending.pop(item.item_id)
        finally:
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()
            self._release(list(pending))
        return len(items) - len(pending)

    def _record(self, item: OutboxItem, delivery: Delivery) -> None:
        """Record one attempt's outcome, and the jobs' states it settles, in one transaction."""
        now, attempts = self.clock(), item.attempts + 1
        state, due = self._after(delivery, attempts, now)
        # a success is not fsynced (it survives kill -9; a power cut can only lose the last
        # ones, and those objects are sent again, where the receiver keeps one per SOP Instance
        # UID); a failure an operator must see is
        with self.db.transaction(durable=state is not ItemState.SENT) as conn:
            rows.record(conn, item.item_id, state, attempts, due, delivery.reason, now)
        self._observe(item, delivery, now)
        if state is ItemState.SENT:
            self._remove_finished({item.sop_instance_uid})

    def _after(self, delivery: Delivery, attempts: int, now: float) -> tuple[ItemState, float]:
        """The state and next due time of an item after attempt `attempts` came to `delivery`."""
        if delivery.outcome is Outcome.SENT:
            return ItemState.SENT, now
        if delivery.outcome is Outcome.TEMPORARY:
            return ItemState.PENDING, now + self.retry_delay(attempts)
        return ItemState.FAILED, now

    def _observe(self, item: OutboxItem, delivery: Delivery, now: float | None = None) -> None:
        """An attempt in the metrics, and in the log when it failed for good."""
        now = self.clock() if now is None else now
        if self.metrics is not None:
            self.metrics.observe_delivery(item.destination, delivery, now - item.created_at)
        if delivery.outcome is Outcome.PERMANENT:
            log.warning(
                "delivery %d to %s failed: %s", item.item_id, item.destination, delivery.reason
            )

    def retry_delay(self, attempts: int) -> float:
        """Back-off before attempt `attempts + 1`: exponential, jittered (x0.5-1), capped."""
        delay = min(self.max_retry_delay_s, self.base_retry_delay_s * 2.0 ** min(attempts - 1, 60))
        return delay * self._rng.uniform(0.5, 1.0)

    def _release(self, item_ids: list[int]) -> None:
        """Put claimed items that were not attempted (stop) back to `pending`, due now."""
        if item_ids:
            with self.db.transaction() as conn:
                rows.release(conn, item_ids)

    def _resume_in_flight(self) -> None:
        """Items `sending` when the last process died are due again now (the receiver dedups)."""
        with self.db.transaction() as conn:
            resumed = rows.resume(conn, self.clock())
        if resumed:
            log.info("outbox: %d deliveries in flight at the last stop will be sent again", resumed)

    # -- background thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="dicom-outbox", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the sender thread after the object in flight (the rest stays pending)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        with self._warm_lock:
            warm, self._warm = self._warm, {}
            openers, self._openers = self._openers, None
        for opening in warm.values():
            for opened in opening.values():
                release_when_opened(opened)
        if openers is not None:
            openers.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.deliver_due()
            except Exception:  # e.g. the disk is full: log, wait, try again
                log.exception("outbox pass failed")
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _idle_wait(self) -> float:
        with self.db.reading() as conn:
            due = rows.next_due(conn)
        return self.poll_s if due is None else min(self.poll_s, max(0.0, due - self.clock()))

    # -- operator ------------------------------------------------------------------------------

    def get(self, item_id: int) -> OutboxItem | None:
        """Item `item_id`, or None."""
        with self.db.reading() as conn:
            row = conn.execute("SELECT * FROM outbox WHERE item_id = ?", (item_id,)).fetchone()
        return self._item(row) if row else None

    def list(
        self, state: ItemState | None = None, limit: int = 100, job_id: str | None = None
    ) -> list[OutboxItem]:
        """Items, oldest first, in `state` and of job `job_id` when given, at most `limit`."""
        with self.db.reading() as conn:
            found = rows.select(conn, state, limit, job_id)
        return [self._item(row) for row in found]

    def counts(self) -> dict[ItemState, int]:
        """How many items are in each state (zeros included)."""
        with self.db.reading() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        found = {ItemState(state): count for state, count in rows}
        return {state: found.get(state, 0) for state in ItemState}

    def retry(self, item_id: int) -> OutboxItem:
        """A failed item is due again now (KeyError: unknown; OutboxStateError: not failed)."""
        item = self._move(item_id, (ItemState.FAILED,), ItemState.PENDING)
        self._wake.set()
        return item

    def discard(self, item_id: int) -> OutboxItem:
        """Give up a pending or failed item (KeyError: unknown; OutboxStateError: sending, sent)."""
        item = self._move(
            item_id, (ItemState.PENDING, ItemState.FAILED, ItemState.DISCARDED), ItemState.DISCARDED
        )
        self._remove_finished({item.sop_instance_uid})
        return item

    def _move(self, item_id: int, allowed: tuple[ItemState, ...], to: ItemState) -> OutboxItem:
        with self.db.transaction() as conn:
            rows.move(conn, item_id, allowed, to, self.clock())
        item = self.get(item_id)
        assert item is not None
        return item

    # -- files -----------------------------------------------------------------------------------

    def _path(self, uid: str) -> Path:
        return self.folder / f"{uid}.dcm"

    def _partial(self, uid: str) -> Path:
        return self.folder / f".{uid}.{os.getpid()}.partial"

    def _item(self, row: sqlite3.Row) -> OutboxItem:
        values = dict(row)
        values["state"] = ItemState(values["state"])
        return OutboxItem(path=self._path(values["sop_instance_uid"]), **values)

    def _remove_finished(self, uids: set[str]) -> None:
        """Delete the files of objects that no destination still needs."""
        with self.db.reading() as conn:
            for uid in uids:
                if not rows.still_needed(conn, uid):
                    self._path(uid).unlink(missing_ok=True)


def _entry(dataset: pydicom.Dataset) -> tuple[str, str, str]:
    """(SOP Instance UID, class, syntax) of a result; Explicit VR Little Endian if it has none."""
    uid, sop_class = str(dataset.SOPInstanceUID), str(dataset.SOPClassUID)
    if not _UID.match(uid):
        raise ValueError("result SOP Instance UID is not a valid UID")
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        dataset.file_meta = meta = meta or FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return uid, sop_class, str(meta.TransferSyntaxUID)


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: the renames and new names in it durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
