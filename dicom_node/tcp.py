"""A pynetdicom Application Entity whose associations do not wait on TCP's small-segment timers.

An archive built on dcmtk (Orthanc, dcmtk's own `storescp`) writes a C-STORE response in more than
one segment with Nagle's algorithm on (dcmtk disables it only when its `TCP_NODELAY` environment
variable says so): the second segment waits until the first is acknowledged, and Linux delays
that acknowledgement by up to 40 ms. pynetdicom's own last P-DATA segment can wait the same way
behind Nagle on the node's side. Together that was about 50-100 ms per C-STORE on loopback
(measured by `bench/dicom_node_profile.py`), whatever the object's size. The node's requesting
sockets therefore set `TCP_NODELAY` (its segments leave at once) and, where the platform has it,
re-arm `TCP_QUICKACK` after each send and receive (its acknowledgements leave at once, so the
archive's Nagle releases the rest of the response). Neither changes what is sent.
"""

from __future__ import annotations

import contextlib
import socket
from ssl import SSLContext

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

__all__ = ["LowLatencyAE", "LowLatencySocket"]

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class LowLatencySocket(AssociationSocket):
    """An association's socket with `TCP_NODELAY` and re-armed `TCP_QUICKACK` (module docs)."""

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _quick_ack(self) -> None:
        if _QUICKACK is None or self.socket is None:
            return
        with contextlib.suppress(OSError):  # closed meanwhile: nothing to speed up
            self.socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def send(self, bytestream: bytes) -> None:
        """Send `bytestream`, then acknowledge the reply's segments at once."""
        super().send(bytestream)
        self._quick_ack()

    def recv(self, nr_bytes: int) -> bytearray:
        """Read `nr_bytes`; the quick-ack mode the kernel drops after a read is set again."""
        data = super().recv(nr_bytes)
        self._quick_ack()
        return data


class LowLatencyAE(AE):
    """`pynetdicom.AE` whose requested associations use `LowLatencySocket`."""

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[SSLContext, str] | None,
    ) -> AssociationSocket:
        # pynetdicom 3.0's hook for the requestor's socket (AE.associate calls it)
        sock = LowLatencySocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock
