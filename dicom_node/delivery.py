"""Delivering result objects to a destination: the `Sender` protocol and its C-STORE SCU.

Outcomes follow the DICOM status classes (PS3.7 Annex C, PS3.4 B.2.3): success and warnings
(0x0001, 0xBxxx: stored) are `SENT`; "refused: out of resources" (0xA7xx), resource limitation
(0x0213), duplicate invocation (0x0210), cancel (0xFE00), a transient association rejection and
every connection problem (refused, timed out, aborted) are `TEMPORARY` and retried; every other
failure status (0x0122 SOP class not supported, 0x0124 not authorised, 0xA9xx, 0xCxxx, 0x0110,
...), a permanent association rejection and a refused presentation context are `PERMANENT`: the
same object would fail the same way again, so an operator decides. Reasons name status codes and
association results only, never anything from the dataset.
"""

from __future__ import annotations

import enum
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pynetdicom import AE, _config
from pynetdicom.association import Association

from dicom_node.model import Destination
from dicom_node.tcp import LowLatencyAE

log = logging.getLogger(__name__)

TEMPORARY_STATUSES = frozenset({0x0210, 0x0213, 0xFE00})
# C-STORE from a file path sends the file's bytes after its meta (pynetdicom's documented switch)
# instead of decoding the dataset and encoding it again: the outbox proposes each file's own
# transfer syntax, so nothing needs converting. Process-wide; only path sends are affected.
_config.STORE_SEND_CHUNKED_DATASET = True


class Outcome(enum.StrEnum):
    """What one delivery attempt came to."""

    SENT = "sent"
    TEMPORARY = "temporary"  # retried with back-off
    PERMANENT = "permanent"  # failed: an operator retries or discards


class ItemState(enum.StrEnum):
    """Where one (object, destination) delivery stands in the outbox."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"  # permanent failure: an operator retries or discards
    DISCARDED = "discarded"


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt to deliver one object, with a reason free of patient data."""

    outcome: Outcome
    reason: str = ""
    status: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class OutboxItem:
    """One result object due for one destination (a row of the outbox)."""

    item_id: int
    job_id: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    destination: str
    path: Path
    state: ItemState
    attempts: int
    next_attempt_at: float
    reason: str
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, object]:
        """The item as JSON (UIDs, destination, state: no patient attributes, no paths)."""
        return {
            "id": self.item_id,
            "job_id": self.job_id,
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "transfer_syntax": self.transfer_syntax,
            "destination": self.destination,
            "state": self.state.value,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class Sender(Protocol):
    """Delivers a batch of items to one destination, yielding each item's outcome as it comes.

    The outbox records each outcome before it asks for the next, so a success is on disk
    before the next object goes out.
    """

    def send(
        self, destination: Destination, items: Sequence[OutboxItem]
    ) -> Iterator[tuple[OutboxItem, Delivery]]:
        """Deliver `items` (one association for the batch) and yield (item, outcome) for each."""
        ...


WaitForFile = Callable[[OutboxItem], None]
Contexts = Sequence[tuple[str, str]]  # (SOP Class UID, Transfer Syntax UID)


def waits_for_files(sender: object) -> bool:
    """Whether `sender.send` takes `written=`: a callable it calls before reading each item's
    file, which returns once that file is complete (or raises), so that a batch can be sent
    while its later files are still being written (`StoreScuSender` does)."""
    return bool(getattr(sender, "waits_for_files", False))


def classify_status(status: int) -> Delivery:
    """A C-STORE response status as an outcome (module docstring: the status classes)."""
    if status == 0x0000 or status == 0x0001 or 0xB000 <= status <= 0xBFFF:
        return Delivery(Outcome.SENT, "" if status == 0 else f"warning 0x{status:04X}", status)
    if 0xA700 <= status <= 0xA7FF or status in TEMPORARY_STATUSES:
        return Delivery(Outcome.TEMPORARY, f"C-STORE status 0x{status:04X}", status)
    return Delivery(Outcome.PERMANENT, f"C-STORE failed: status 0x{status:04X}", status)


def association_failure(assoc: Association) -> Delivery:
    """Why an association was not established, as an outcome."""
    response = assoc.acceptor.primitive
    if assoc.is_rejected and response is not None:
        reason = f"{response.result_str}, {response.source_str}: {response.reason_str}"
        congested = response.result_source == 3 and response.diagnostic in (1, 2)
        if response.result == 0x02 or congested:
            return Delivery(Outcome.TEMPORARY, f"association rejected ({reason})")
        return Delivery(Outcome.PERMANENT, f"association rejected ({reason})")
    if response is not None and response.result == 0x00:
        return Delivery(
            Outcome.PERMANENT,
            "no presentation context accepted (SOP class or transfer syntax not supported)",
        )
    return Delivery(Outcome.TEMPORARY, "no association (connection refused, timed out or aborted)")


class StoreScuSender:
    """C-STORE SCU (pynetdicom): one association per batch, proposing each result's SOP class
    with the transfer syntax it was written in; its sockets do not wait on TCP's small-segment
    timers (`dicom_node.tcp`). It can send a batch whose later files are still being written
    (`waits_for_files`): the association is set up first, each C-STORE waits for its file."""

    waits_for_files = True

    def __init__(
        self,
        ae_title: str = "VISION",
        connection_timeout_s: float = 10.0,
        acse_timeout_s: float = 30.0,
        dimse_timeout_s: float = 120.0,
        *,
        low_latency: bool = True,
    ) -> None:
        self.ae_title = ae_title
        self.low_latency = low_latency  # False: plain pynetdicom sockets (the bench's "before")
        self.connection_timeout_s = connection_timeout_s
        self.acse_timeout_s = acse_timeout_s
        self.dimse_timeout_s = dimse_timeout_s

    def _application_entity(self, contexts: Contexts) -> AE:
        ae = (LowLatencyAE if self.low_latency else AE)(ae_title=self.ae_title)
        ae.connection_timeout = self.connection_timeout_s
        ae.acse_timeout = self.acse_timeout_s
        ae.dimse_timeout = self.dimse_timeout_s
        ae.network_timeout = self.dimse_timeout_s
        for sop_class, syntax in list(dict.fromkeys(contexts))[:128]:
            ae.add_requested_context(sop_class, syntax)
        return ae

    def open(self, destination: Destination, contexts: Contexts) -> Association | None:
        """An association to `destination` proposing `contexts` ((SOP class, transfer syntax)
        pairs), opened ahead for a later `send(..., association=...)`; None when it was not
        established (the send then opens its own, and says why it failed)."""
        assoc = self._application_entity(contexts).associate(
            destination.host, destination.port, ae_title=destination.ae_title
        )
        return assoc if assoc.is_established else None

    def send(
        self,
        destination: Destination,
        items: Sequence[OutboxItem],
        written: WaitForFile | None = None,
        association: Association | None = None,
    ) -> Iterator[tuple[OutboxItem, Delivery]]:
        """See `Sender.send`; `written(item)`, when given, is called before each item's C-STORE
        and returns once its file is complete (`waits_for_files`); `association`, one from
        `open`, is used (and released) if it is still established and accepted every item's
        context, else a new one is opened."""
        started = time.perf_counter()
        assoc = _reusable(association, items)
        if assoc is None:
            assoc = self._application_entity(_contexts(items)).associate(
                destination.host, destination.port, ae_title=destination.ae_title
            )
        if not assoc.is_established:
            failure = association_failure(assoc)
            log.warning("no association with %s: %s", destination, failure.reason)
            for item in items:
                yield item, failure
            return
        try:
            for index, item in enumerate(items):
                if written is not None:  # the wait for the file is not the C-STORE's time
                    waited = time.perf_counter()
                    written(item)
                    started += time.perf_counter() - waited
                delivery = _store(assoc, item, started)
                started = time.perf_counter()
                yield item, delivery
                if not assoc.is_established:
                    lost = Delivery(Outcome.TEMPORARY, "association aborted")
                    for rest in items[index + 1 :]:
                        yield rest, lost
                    return
        finally:
            if assoc.is_established:
                assoc.release()


def _contexts(items: Sequence[OutboxItem]) -> Contexts:
    return [(item.sop_class_uid, item.transfer_syntax) for item in items]


def _reusable(assoc: Association | None, items: Sequence[OutboxItem]) -> Association | None:
    """`assoc` if it is still established and accepted every item's context (else released)."""
    if assoc is None or not assoc.is_established:
        return None
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    if set(_contexts(items)) <= accepted:
        return assoc
    assoc.release()
    return None


def _store(assoc: Association, item: OutboxItem, started: float) -> Delivery:
    """One C-STORE of `item` on an established association."""
    if not item.path.exists():
        return Delivery(Outcome.PERMANENT, "result file missing from the outbox folder")
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    if (item.sop_class_uid, item.transfer_syntax) not in accepted:
        return Delivery(
            Outcome.PERMANENT,
            f"destination accepted no context for SOP class {item.sop_class_uid} "
            f"in transfer syntax {item.transfer_syntax}",
        )
    response = assoc.send_c_store(item.path)
    seconds = time.perf_counter() - started
    if "Status" not in response:
        return Delivery(Outcome.TEMPORARY, "no C-STORE response (timeout or abort)", None, seconds)
    delivery = classify_status(int(response.Status))
    return Delivery(delivery.outcome, delivery.reason, delivery.status, seconds)


class StowRsSender:
    """STOW-RS (DICOMweb, PS3.18 10.5): one POST per object to `url` (for example
    `http://pacs:8042/dicom-web/studies`), standard library only; the destination names the batch.

    200 is `SENT`; 202 is `SENT` unless the response lists the object as failed (its Failure
    Reason is classified like a C-STORE status); 408, 429, 5xx and connection errors are
    `TEMPORARY`; any other status (400, 401, 403, 409, 415, ...) is `PERMANENT`.
    """

    def __init__(
        self, url: str, timeout_s: float = 60.0, headers: dict[str, str] | None = None
    ) -> None:
        self.url, self.timeout_s, self.headers = url, timeout_s, dict(headers or {})

    def send(
        self, destination: Destination, items: Sequence[OutboxItem]
    ) -> Iterator[tuple[OutboxItem, Delivery]]:
        """See `Sender.send`."""
        for item in items:
            started = time.perf_counter()
            delivery = self._post(item)
            seconds = time.perf_counter() - started
            yield item, Delivery(delivery.outcome, delivery.reason, delivery.status, seconds)

    def _post(self, item: OutboxItem) -> Delivery:
        if not item.path.exists():
            return Delivery(Outcome.PERMANENT, "result file missing from the outbox folder")
        boundary = f"vision-{item.item_id}-{time.time_ns()}"
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                item.path.read_bytes(),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        headers = {
            **self.headers,
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return stow_outcome(response.status, response.read())
        except urllib.error.HTTPError as error:
            return stow_outcome(error.code, error.read())
        except (urllib.error.URLError, OSError) as error:  # refused, unreachable, timed out
            return Delivery(Outcome.TEMPORARY, f"STOW-RS: {type(error).__name__}")


def stow_outcome(code: int, body: bytes) -> Delivery:
    """A STOW-RS response (one object) as an outcome (`StowRsSender`)."""
    if code == 202:
        try:
            failed = json.loads(body or b"{}").get("00081198", {}).get("Value", [])
        except (ValueError, AttributeError):
            failed = []
        if failed:
            reason = int(failed[0].get("00081197", {}).get("Value", [0xC000])[0])
            outcome = classify_status(reason).outcome
            return Delivery(outcome, f"STOW-RS failure reason 0x{reason:04X}", code)
        return Delivery(Outcome.SENT, "STOW-RS 202 (warnings)", code)
    if code == 200:
        return Delivery(Outcome.SENT, status=code)
    if code in (408, 429) or code >= 500:
        return Delivery(Outcome.TEMPORARY, f"STOW-RS HTTP {code}", code)
    return Delivery(Outcome.PERMANENT, f"STOW-RS HTTP {code}", code)
