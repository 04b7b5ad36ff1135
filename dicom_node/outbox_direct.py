"""A job's last results sent while they are written, before any row names them
(`Outbox.enqueue(send_now=True)`).

The results are written to partial files one after another, not fsynced; a thread per
destination opens the association meanwhile and C-STOREs each file as soon as it is complete.
Afterwards the objects a destination did not take (a temporary or permanent failure, or a sender
that stopped) are fsynced and renamed into the outbox, the folder is fsynced, and then one
transaction records the rows with the outcomes already known: `sent` rows need no file (the
partial is deleted) and, when every row is `sent`, the commit is not fsynced either (a success
lost to a power cut is sent again, as in `Outbox._record`). Nothing names a file before it is
durable, so the outbox's promise holds: a row never points at a file a power cut emptied.

A crash (`kill -9`, a power cut) before that commit leaves no row: the job's source instances are
not yet marked processed, so the job runs again from the spool on restart and sends the same
objects again (the result UIDs are derived from the sources), which the archive keeps once per
SOP Instance UID. That is the price of sending before the commit: at most the objects of the
jobs being sent at the crash reach the archive twice, the same objects; no delivery is recorded
twice.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from dicom_node.delivery import Delivery, OutboxItem, Sender, waits_for_files
from dicom_node.model import Destination

log = logging.getLogger(__name__)

Steps = list[tuple[OutboxItem, Delivery]]


class WriteFailedError(RuntimeError):
    """A result file could not be written: the batch is not sent."""


class WrittenFiles:
    """Which of a batch's files are complete: set by the writer, waited on by the senders."""

    def __init__(self, uids: Sequence[str]) -> None:
        self._events = {uid: threading.Event() for uid in uids}
        self._failed = False

    def done(self, uid: str) -> None:
        """Object `uid`'s file is complete."""
        self._events[uid].set()

    def fail(self) -> None:
        """The writer gave up: every waiting sender stops (`WriteFailedError`)."""
        self._failed = True
        for event in self._events.values():
            event.set()

    def wait(self, item: OutboxItem) -> None:
        """Return once `item`'s file is complete; `WriteFailedError` if the writer gave up."""
        self._events[item.sop_instance_uid].wait()
        if self._failed:
            raise WriteFailedError("a result file could not be written")

    def wait_all(self) -> None:
        """Return once every file is complete; `WriteFailedError` if the writer gave up."""
        for event in self._events.values():
            event.wait()
        if self._failed:
            raise WriteFailedError("a result file could not be written")


def send_while_written(
    sender: Sender,
    destination: Destination,
    items: Sequence[OutboxItem],
    files: WrittenFiles,
    opened: Future | None = None,
) -> Callable[[], Steps]:
    """Start `sender.send` of `items` in a thread, each file sent once complete
    (`waits_for_files`; other senders start once every file is complete); returns a callable
    that waits for the outcomes, in order, as many as the sender gave, and not for the sender
    to end the association afterwards.

    A sender that raises stops the batch there: the items without an outcome are queued as
    usual, and its error is logged (a write failure is not: it ends the enqueue itself).
    `opened`: the association opened for these items while they were being built
    (`Outbox.warm`), handed to the sender.
    """
    steps: queue.SimpleQueue[tuple[OutboxItem, Delivery] | None] = queue.SimpleQueue()
    thread = threading.Thread(
        target=_send,
        args=(sender, destination, items, files, steps, opened),
        name="outbox-direct",
    )
    thread.start()

    def outcomes() -> Steps:
        got: Steps = []
        while len(got) < len(items):
            step = steps.get()
            if step is None:  # the sender ended early
                break
            got.append(step)
        return got

    return outcomes


def _send(
    sender: Sender,
    destination: Destination,
    items: Sequence[OutboxItem],
    files: WrittenFiles,
    steps: queue.SimpleQueue[tuple[OutboxItem, Delivery] | None],
    opened: Future | None,
) -> None:
    try:
        options: dict[str, object] = {}
        if opened is not None:
            options["association"] = _association(opened, destination)
        if waits_for_files(sender):
            options["written"] = files.wait
        else:
            files.wait_all()
        outcomes = sender.send(destination, items, **options)  # type: ignore[call-arg]
        for step in outcomes:  # the last outcome is taken before the association is released
            steps.put(step)
    except WriteFailedError:
        pass  # the writer raises its own error to the enqueue's caller
    except Exception:  # a sender bug: what it did not deliver goes through the queue
        log.exception("direct send to %s failed; the rest is queued", destination)
    finally:
        steps.put(None)


def _association(opened: Future, destination: Destination) -> object:
    """The association `opened` holds, or None when opening it failed (logged: the send opens
    its own and records why that failed)."""
    try:
        return opened.result()
    except Exception:  # noqa: BLE001 - the send's own association attempt reports the cause
        log.warning("association opened ahead to %s failed", destination, exc_info=True)
        return None


def release_when_opened(opened: Future) -> None:
    """Release the association `opened` will hold (unused), once it is there, in a thread of
    its own (never the caller's: that may be the event loop)."""

    def release(done: Future) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:  # unused anyway: nothing was waiting on it
            log.info("an unused association opened ahead failed: %r", done.exception())
            return
        assoc = done.result()
        if assoc is not None and assoc.is_established:
            assoc.release()

    def start(done: Future) -> None:
        threading.Thread(target=release, args=(done,), name="outbox-release", daemon=True).start()

    opened.add_done_callback(start)
