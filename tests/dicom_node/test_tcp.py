"""The outbox's C-STORE SCU sockets: TCP_NODELAY on, quick acks re-armed, objects unchanged."""

from __future__ import annotations

import socket
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from dicom_node.delivery import ItemState, OutboxItem, Outcome, StoreScuSender
from dicom_node.model import Destination
from dicom_node.tcp import LowLatencyAE


def _scp(received: list[bytes]):
    def on_store(event: evt.Event) -> int:
        received.append(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE("PACS")
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    return ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )


def test_requested_associations_disable_nagle() -> None:
    server = _scp([])
    try:
        ae = LowLatencyAE("VISION")
        ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="PACS")
        assert assoc.is_established
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assoc.release()
    finally:
        server.shutdown()


def test_sender_delivers_the_file_bytes_unchanged(tmp_path: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    received: list[bytes] = []
    server = _scp(received)
    try:
        item = OutboxItem(
            1, "job", str(ds.SOPInstanceUID), str(ds.SOPClassUID), "1.2.840.10008.1.2.1",
            "PACS@127.0.0.1", path, ItemState.SENDING, 0, 0.0, "", 0.0, 0.0,
        )  # fmt: skip
        dest = Destination("PACS", "127.0.0.1", server.server_address[1])
        outcomes = list(StoreScuSender().send(dest, [item]))
    finally:
        server.shutdown()
    assert [o.outcome for _, o in outcomes] == [Outcome.SENT]
    # the data set after the file meta, byte for byte (sent from the file, not re-encoded)
    raw = path.read_bytes()
    assert len(received) == 1 and raw.endswith(received[0])
