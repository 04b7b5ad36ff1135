"""TLS and mutual TLS for both ports, with certificates reloaded in place (SIGHUP).

gRPC uses `grpc.dynamic_ssl_server_credentials`: its fetcher hands gRPC the new certificate
configuration at the next handshake. HTTP uses one `ssl.SSLContext` whose SNI callback moves
every new connection onto the latest context (certificate, key and client CAs), so uvicorn's
listener never restarts. Connections already open keep the certificate they started with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TlsError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key; with `client_ca`, mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by `client_ca`."""
        return self.client_ca is not None

    def context(self) -> ssl.SSLContext:
        """A server context from the files as they are now (TLS 1.2+); TlsError when unusable."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(
                f"cannot use TLS certificate {self.cert} with key {self.key} ({_reason(exc)}): "
                "give a PEM certificate chain and its unencrypted PEM private key"
            ) from exc
        if self.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            try:
                ctx.load_verify_locations(cafile=self.client_ca)
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(
                    f"cannot use client CA file {self.client_ca} ({_reason(exc)}): "
                    "give the PEM certificate(s) of the CA that signs client certificates"
                ) from exc
        return ctx

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, key, client CAs) as PEM bytes, checked as a usable context."""
        self.context()
        try:
            ca = self.client_ca.read_bytes() if self.client_ca is not None else None
            return self.cert.read_bytes(), self.key.read_bytes(), ca
        except OSError as exc:
            raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return type(exc).__name__


class GrpcTls:
    """Server credentials for gRPC whose certificate configuration `reload` replaces."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._initial = self._configuration()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, ca = self.files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for `server.add_secure_port` (client certificates required under mTLS)."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=self.files.mutual
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: the new configuration once, else None."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def reload(self) -> None:
        """Read the files again; the next handshakes use them. TlsError keeps the old ones."""
        configuration = self._configuration()
        with self._lock:
            self._pending = configuration


class HttpTls:
    """An `ssl.SSLContext` for uvicorn that `reload` points at freshly read files."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._current = files.context()
        self.context = files.context()
        self.context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext):
        """Move a new connection onto the latest context (called on every ClientHello)."""
        connection.context = self._current
        return None

    def reload(self) -> None:
        """Read the files again; new connections use them. TlsError keeps the old ones."""
        self._current = self.files.context()


@dataclass(frozen=True)
class ClientTls:
    """What a client trusts (`ca`: PEM CA certificates) and, for mutual TLS, presents."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the files; TlsError names one that cannot be read."""
        try:
            ca = self.ca.read_bytes()
            cert = self.cert.read_bytes() if self.cert else None
            key = self.key.read_bytes() if self.key else None
        except OSError as exc:
            raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from exc
        if (cert is None) != (key is None):
            raise TlsError("a client certificate needs its key (and the key its certificate)")
        return grpc.ssl_channel_credentials(ca, key, cert)
