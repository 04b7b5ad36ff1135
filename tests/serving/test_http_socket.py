"""The HTTP listener's sockets: TCP_NODELAY on every accepted connection (no Nagle wait)."""

from __future__ import annotations

import socket

from serving.http.server import _listen


def test_accepted_connections_have_tcp_nodelay():
    listener = _listen("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname(), timeout=30):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
