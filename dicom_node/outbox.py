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
belong to follow (`queued` -> `sent` or `failed`).
"""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node import outbox_rows as rows
from dicom_node.delivery import Delivery, ItemState, OutboxItem, Outcome, Sender, StoreScuSender
from dicom_node.jobs import Database, JobStore, upsert_job
from dicom_node.metrics import NodeMetrics
from dicom_node.model import Destination, JobState
from dicom_node.outbox_rows import OutboxStateError

__all__ = ["ItemState", "Outbox", "OutboxItem", "OutboxStateError"]

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9.]{1,64}$")
WRITERS = 8  # threads writing (and fsyncing) one enqueue's files


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
        """
        if not self.destinations:
            if not ahead:
                self.store.upsert(job_id, JobState.FAILED, reason="no destination configured")
            return []
        written = self._write_all(datasets)
        if written:  # the renames durable (one folder fsync) before any row names the files
            _fsync_folder(self.folder)
        now = self.clock()
        with self.db.transaction() as conn:
            ids = [
                rows.insert(conn, job_id, entry, dest, now, link=not ahead)
                for entry in written
                for dest in self.destinations
            ]
            if not ahead:
                for uid in earlier:
                    for dest in self.destinations:
                        rows.link(conn, job_id, uid, dest)
                count = len(datasets) + len(earlier)
                marks = {"queued_at": now, "results": count} if mark_queued else {}
                upsert_job(conn, job_id, JobState.QUEUED, now, reason="", **marks)
                rows.settle(conn, job_id, now)
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
        uid, sop_class = str(dataset.SOPInstanceUID), str(dataset.SOPClassUID)
        if not _UID.match(uid):
            raise ValueError("result SOP Instance UID is not a valid UID")
        meta = getattr(dataset, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            dataset.file_meta = meta = meta or FileMetaDataset()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
        final, partial = self._path(uid), self.folder / f".{uid}.{os.getpid()}.partial"
        try:
            with open(partial, "wb") as file:
                dataset.save_as(file, enforce_file_format=True)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, final)  # the caller fsyncs the folder before committing rows
        except BaseException:  # a full disk, say: no half-written file left holding space
            partial.unlink(missing_ok=True)
            raise
        return uid, sop_class, str(meta.TransferSyntaxUID)

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
        state, due = ItemState.FAILED, now
        if delivery.outcome is Outcome.SENT:
            state = ItemState.SENT
        elif delivery.outcome is Outcome.TEMPORARY:
            state, due = ItemState.PENDING, now + self.retry_delay(attempts)
        # a success is not fsynced (it survives kill -9; a power cut can only lose the last
        # ones, and those objects are sent again, where the receiver keeps one per SOP Instance
        # UID); a failure an operator must see is
        with self.db.transaction(durable=state is not ItemState.SENT) as conn:
            rows.record(conn, item.item_id, state, attempts, due, delivery.reason, now)
        if self.metrics is not None:
            self.metrics.observe_delivery(item.destination, delivery, now - item.created_at)
        if state is ItemState.FAILED:
            log.warning(
                "delivery %d to %s failed: %s", item.item_id, item.destination, delivery.reason
            )
        if state is ItemState.SENT:
            self._remove_finished({item.sop_instance_uid})

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


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
