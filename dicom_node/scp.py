"""The node's DICOM listener: C-ECHO and C-STORE SCP on pynetdicom, writing to the spool.

A C-STORE is answered Success (0x0000) only after `Spool.store` returned, i.e. the instance is
fsynced on disk; any spool failure answers Out of Resources (0xA700). Refusals:

- association: a calling AE title not in `allowed_calling_aes` (A-ASSOCIATE-RJ, permanent,
  "calling AE title not recognised"); free disk below `min_free_disk_mb` (A-ASSOCIATE-RJ,
  transient, "local limit exceeded"); SOP classes and transfer syntaxes outside
  `STORAGE_SOP_CLASSES` / `transfer_syntaxes()`: their presentation contexts are rejected;
- C-STORE: 0x0122 (SOP class not supported, or not the context's), 0xA900 (the data set's SOP
  Class / Instance UIDs are not the request's), 0xC000 (the data set cannot be parsed or lacks
  valid Study / Series / SOP Instance UIDs), 0xA700 (disk below the floor, or the write failed),
  0x0110 (stored, but the node could not take it in: a resend replaces the file).

Log lines name AE titles, SOP classes and, at DEBUG, UIDs; never a patient attribute or a
data set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from dicom_node.model import NodeSettings, SpooledInstance
from dicom_node.spool import Spool
from dicom_node.syntaxes import STORAGE_SOP_CLASSES, transfer_syntaxes
from vision.errors import InvalidInputError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
# A-ASSOCIATE-RJ for the disk floor: rejected-transient, service-provider (presentation),
# local-limit-exceeded.
_REJECT_DISK = (0x02, 0x03, 0x02)
MAX_ASSOCIATIONS = 32


class StorageSCP:
    """C-ECHO and C-STORE SCP: received instances go to `spool`, then to `on_instance`.

    `on_instance` hears each stored instance (in the association's thread, after the file is
    durable and before the response is sent); `on_released` hears the calling AE title of
    each association released normally after it stored at least one instance. An aborted
    association is only logged: its series complete by idle time.
    """

    def __init__(
        self,
        settings: NodeSettings,
        spool: Spool,
        on_instance: Callable[[SpooledInstance], None],
        on_released: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.on_instance = on_instance
        self.on_released = on_released
        self._server: Any = None
        self._lock = threading.Lock()
        self._senders: dict[int, str] = {}

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.require_calling_aet = list(self.settings.allowed_calling_aes)
        ae.maximum_associations = MAX_ASSOCIATIONS
        ae.add_supported_context(Verification)
        syntaxes = transfer_syntaxes()
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, syntaxes)
        return ae

    def start(self) -> int:
        """Listen on `settings.host:settings.port` (0: a free port); returns the bound port."""
        if self._server is not None:
            raise RuntimeError("the storage SCP is already started")
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        address = (self.settings.host, self.settings.port)
        self._server = self._build_ae().start_server(address, block=False, evt_handlers=handlers)
        port = int(self._server.server_address[1])
        log.info("DICOM node %s listening on %s:%d", self.settings.ae_title, address[0], port)
        return port

    def stop(self) -> None:
        """Stop listening and end the open associations (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            log.info("DICOM node %s stopped", self.settings.ae_title)

    def _free_mb(self) -> float:
        return self.spool.free_bytes() / (1024 * 1024)

    def _disk_low(self) -> bool:
        return self._free_mb() < self.settings.min_free_disk_mb

    def _on_requested(self, event: evt.Event) -> None:
        if not self._disk_low():
            return
        calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        log.warning(
            "association from %s refused: %.0f MB free, the floor is %d MB",
            calling,
            self._free_mb(),
            self.settings.min_free_disk_mb,
        )
        event.assoc.acse.send_reject(*_REJECT_DISK)
        event.assoc.kill()

    def _on_echo(self, event: evt.Event) -> int:
        log.debug("C-ECHO from %s", event.assoc.requestor.ae_title)
        return SUCCESS

    def _on_store(self, event: evt.Event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        request = event.request
        sop_class = UID(str(request.AffectedSOPClassUID))
        status = self._check_request(sop_class, UID(event.context.abstract_syntax))
        if status != SUCCESS:
            log.warning("C-STORE from %s refused: %s, status 0x%04X", calling, sop_class, status)
            return status
        ds, status = self._dataset(event, calling)
        if ds is None:
            return status
        instance, status = self._spool(ds, calling, str(event.context.transfer_syntax))
        if instance is None:
            return status
        with self._lock:
            self._senders[id(event.assoc)] = calling
        return self._deliver(instance)

    @staticmethod
    def _check_request(sop_class: UID, context_class: UID) -> int:
        if sop_class not in STORAGE_SOP_CLASSES or sop_class != context_class:
            return SOP_CLASS_NOT_SUPPORTED
        return SUCCESS

    def _dataset(self, event: evt.Event, calling: str) -> tuple[Dataset | None, int]:
        request = event.request
        try:
            ds = event.dataset
        except Exception as exc:  # a malformed data set from the peer; message may hold values
            log.warning("C-STORE from %s: data set unreadable (%s)", calling, type(exc).__name__)
            return None, CANNOT_UNDERSTAND
        if str(ds.get("SOPClassUID", "")) != str(request.AffectedSOPClassUID) or str(
            ds.get("SOPInstanceUID", "")
        ) != str(request.AffectedSOPInstanceUID):
            log.warning("C-STORE from %s: data set UIDs are not the request's", calling)
            return None, DATASET_MISMATCH
        return ds, SUCCESS

    def _spool(
        self, ds: Dataset, calling: str, transfer_syntax: str
    ) -> tuple[SpooledInstance | None, int]:
        if self._disk_low():
            log.error("C-STORE from %s refused: free disk below the floor", calling)
            return None, OUT_OF_RESOURCES
        try:
            instance = self.spool.store(ds, calling, transfer_syntax)
        except InvalidInputError as exc:
            log.warning("C-STORE from %s refused: %s", calling, exc)
            return None, CANNOT_UNDERSTAND
        except Exception as exc:  # disk full, I/O error, an unwritable data set: never success
            log.error(
                "C-STORE from %s: spool write failed (%s: %s)",
                calling,
                type(exc).__name__,
                getattr(exc, "strerror", None) or "see the exception type",
            )
            return None, OUT_OF_RESOURCES
        log.debug(
            "stored %s of series %s from %s",
            instance.sop_instance_uid,
            instance.series_uid,
            calling,
        )
        return instance, SUCCESS

    def _deliver(self, instance: SpooledInstance) -> int:
        try:
            self.on_instance(instance)
        except Exception:
            log.exception("instance %s stored but not taken in", instance.sop_instance_uid)
            return PROCESSING_FAILURE
        return SUCCESS

    def _forget(self, event: evt.Event) -> str | None:
        with self._lock:
            return self._senders.pop(id(event.assoc), None)

    def _on_released(self, event: evt.Event) -> None:
        calling = self._forget(event)
        if calling is None:
            return
        log.info("association from %s released", calling)
        try:
            self.on_released(calling)
        except Exception:
            log.exception("release of an association from %s not handled", calling)

    def _on_aborted(self, event: evt.Event) -> None:
        calling = self._forget(event)
        log.info("association from %s aborted", calling or event.assoc.requestor.ae_title)
