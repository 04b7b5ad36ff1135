"""TLS and mutual TLS on both ports with real grpc secure channels and httpx, and reloads."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from serving.security import SecuritySettings, TlsError, TlsFiles
from tests.security.certs import Pair, fingerprint
from tests.security.conftest import make_pki, start_secured

HEALTHY = health_pb2.HealthCheckResponse.SERVING


def _channel(address: str, ca: Path, client: Pair | None = None) -> grpc.Channel:
    key, cert = (client.key.read_bytes(), client.cert.read_bytes()) if client else (None, None)
    credentials = grpc.ssl_channel_credentials(ca.read_bytes(), key, cert)
    return grpc.secure_channel(address, credentials)


def _health(channel: grpc.Channel) -> int:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(), timeout=30)
        .status
    )


def _presented(port: int, ca: Path, client: Pair | None = None) -> bytes | None:
    """SHA-256 of the certificate the HTTP port presents on a fresh connection that answers
    200, or None when the handshake or the exchange is refused."""
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        with raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            if not tls.recv(64).startswith(b"HTTP/1.1 200"):
                return None
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None
    return fingerprint(ssl.DER_cert_to_PEM_cert(der).encode())


def _client(ca: Path, client: Pair | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=ca)
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return httpx.Client(verify=context, timeout=30)


def _files(pki, folder: Path, mutual: bool) -> TlsFiles:
    """Copies of the server's files (so a test can replace them and reload)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = shutil.copy(pki.server.cert, folder), shutil.copy(pki.server.key, folder)
    ca = shutil.copy(pki.ca.pair.cert, folder / "client-ca.pem") if mutual else None
    return TlsFiles(Path(cert), Path(key), Path(ca) if ca else None)


@pytest.fixture(scope="module")
def tls_server(repository, pki, tmp_path_factory):
    files = _files(pki, tmp_path_factory.mktemp("tls"), mutual=False)
    running = start_secured(repository, SecuritySettings(tls=files))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls_server(repository, pki, tmp_path_factory):
    files = _files(pki, tmp_path_factory.mktemp("mtls"), mutual=True)
    running = start_secured(repository, SecuritySettings(tls=files))
    yield running
    running.stop()


def test_grpc_over_tls(tls_server, pki):
    with _channel(tls_server.address, pki.ca.pair.cert) as channel:
        assert _health(channel) == HEALTHY
        models = vision_pb2_grpc.VisionServiceStub(channel).ListModels(pb.ListModelsRequest())
        assert "bright" in {m.name for m in models.models}
    with grpc.insecure_channel(tls_server.address) as plain:  # plaintext gets nothing
        with pytest.raises(grpc.RpcError) as info:
            _health(plain)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with _channel(tls_server.address, pki.stranger.pair.cert) as untrusted:  # wrong CA
        with pytest.raises(grpc.RpcError) as info:
            _health(untrusted)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_http_over_tls(tls_server, pki):
    with _client(pki.ca.pair.cert) as client:
        reply = client.get(f"{tls_server.http_base}/v2/models/bright")
        assert reply.status_code == 200 and reply.json()["name"] == "bright"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.server.http_port}/v2/health/live", timeout=30)
    with _client(pki.stranger.pair.cert) as untrusted, pytest.raises(httpx.ConnectError):
        untrusted.get(f"{tls_server.http_base}/v2/health/live")


def test_mtls_requires_a_client_certificate_from_the_ca(mtls_server, pki):
    ca = pki.ca.pair.cert
    with _channel(mtls_server.address, ca, pki.client) as channel:
        assert _health(channel) == HEALTHY
    for client in (None, pki.stranger_client):
        with _channel(mtls_server.address, ca, client) as refused:
            with pytest.raises(grpc.RpcError) as info:
                _health(refused)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with _client(ca, pki.client) as client:
        assert client.get(f"{mtls_server.http_base}/v2/health/ready").status_code == 200
    for client in (None, pki.stranger_client):
        with _client(ca, client) as refused, pytest.raises(httpx.TransportError):
            refused.get(f"{mtls_server.http_base}/v2/health/ready")


def _replace(files: TlsFiles, server: Pair, client_ca: Path | None) -> None:
    shutil.copy(server.cert, files.cert)
    shutil.copy(server.key, files.key)
    if client_ca is not None:
        shutil.copy(client_ca, files.client_ca)


def test_reload_presents_the_new_certificate_and_trusts_the_new_client_ca(repository, tmp_path):
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    files = _files(old, tmp_path / "live", mutual=True)
    running = start_secured(repository, SecuritySettings(tls=files))
    try:
        port = running.server.http_port
        assert _presented(port, old.ca.pair.cert, old.client) == fingerprint(old.server.read()[0])
        _replace(files, new.server, new.ca.pair.cert)
        assert running.server.reload_security()
        assert _presented(port, new.ca.pair.cert, new.client) == fingerprint(new.server.read()[0])
        assert _presented(port, new.ca.pair.cert, old.client) is None  # old client CA: gone
        with _channel(running.address, new.ca.pair.cert, new.client) as channel:
            assert _health(channel) == HEALTHY
        stale = _channel(running.address, old.ca.pair.cert, old.client)
        with stale, pytest.raises(grpc.RpcError):
            _health(stale)
    finally:
        running.stop()


def test_a_broken_reload_keeps_the_working_certificate(repository, pki, tmp_path):
    files = _files(pki, tmp_path / "live", mutual=False)
    running = start_secured(repository, SecuritySettings(tls=files))
    try:
        files.key.write_text("not a key")
        assert not running.server.reload_security()
        with _channel(running.address, pki.ca.pair.cert) as channel:
            assert _health(channel) == HEALTHY
        assert _presented(running.server.http_port, pki.ca.pair.cert) == fingerprint(
            pki.server.read()[0]
        )
    finally:
        running.stop()


def test_unusable_files_say_which_and_how_to_fix(pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("garbage")
    with pytest.raises(TlsError, match="PEM certificate chain"):
        TlsFiles(bad, pki.server.key).context()
    with pytest.raises(TlsError, match="PEM certificate chain"):
        TlsFiles(pki.server.cert, pki.client.key).context()  # a key of another certificate
    with pytest.raises(TlsError, match="client CA"):
        TlsFiles(pki.server.cert, pki.server.key, bad).context()
    with pytest.raises(TlsError):
        TlsFiles(tmp_path / "absent.pem", pki.server.key).context()


def test_vision_client_over_mtls_with_a_token(repository, pki, tmp_path):
    from app.commands.token import make
    from serving.client import VisionClient
    from serving.security import ClientTls

    tokens = tmp_path / "tokens.yaml"
    token = make("scanner-1", ["infer"], tokens)
    files = _files(pki, tmp_path / "live", mutual=True)
    running = start_secured(repository, SecuritySettings(tls=files, tokens_file=tokens))
    try:
        tls = ClientTls(pki.ca.pair.cert, pki.client.cert, pki.client.key)
        with VisionClient(running.address, api_key=token, tls=tls) as client:
            assert "bright" in {m.name for m in client.list_models().models}
        with VisionClient(running.address, tls=ClientTls(pki.ca.pair.cert)) as no_cert:
            with pytest.raises(grpc.RpcError) as info:
                no_cert.list_models()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()
    with pytest.raises(TlsError, match="needs its key"):
        ClientTls(pki.ca.pair.cert, pki.client.cert).credentials()
