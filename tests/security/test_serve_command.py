"""`vision serve`'s security flags, and SIGHUP reloading certificates and tokens in a real
server process."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from app.cli import main as vision
from app.commands.serve import build_parser, config_from
from app.commands.token import make
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from serving.security.tokens import load_tokens, save_tokens
from tests.security.certs import fingerprint
from tests.security.conftest import make_pki

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_loopback_and_metrics_behind_a_token(monkeypatch):
    monkeypatch.delenv("VISION_API_KEY", raising=False)
    config = config_from(build_parser().parse_args([]))
    assert config.host == "127.0.0.1" and config.api_key == ""
    assert config.security.metrics == "token" and config.security.reflection
    assert config.security.tls is None and config.security.rate_limit is None


def test_env_api_key_and_security_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("VISION_API_KEY", "from-the-environment")
    flags = [
        "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem",
        "--auth-tokens", "t.yaml", "--metrics", "off", "--reflection", "off",
        "--rate-limit", "20:40", "--audit-log", "a.jsonl", "--host", "0.0.0.0",
    ]  # fmt: skip
    config = config_from(build_parser().parse_args(flags))
    assert config.api_key == "from-the-environment" and config.host == "0.0.0.0"
    security = config.security
    assert security.tls.mutual and security.tokens_file == Path("t.yaml")
    assert (security.metrics, security.reflection) == ("off", False)
    assert (security.rate_limit.rate, security.rate_limit.burst) == (20, 40)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--api-key", "s3cret"], "--api-key was removed"),
        (["--tls-cert", "c.pem"], "both --tls-cert and --tls-key"),
        (["--tls-client-ca", "ca.pem"], "needs --tls-cert"),
        (["--rate-limit", "fast"], "RPS or RPS:BURST"),
    ],
)
def test_bad_flags_exit_2_with_the_fix(capsys, flags, message):
    assert vision(["serve", "--grpc-port", "-1", "--http-port", "-1", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "s3cret" not in err


def test_unusable_token_or_certificate_files_exit_2(capsys, tmp_path, repository):
    bad = tmp_path / "tokens.yaml"
    bad.write_text("tokens: [{name: a, roles: [root], sha256: x}]")
    ports = ["--models", str(repository), "--grpc-port", "-1", "--http-port", "-1"]
    assert vision(["serve", *ports, "--auth-tokens", str(bad)]) == 2
    assert "unknown role" in capsys.readouterr().err
    pem = tmp_path / "x.pem"
    pem.write_text("nope")
    assert vision(["serve", *ports, "--tls-cert", str(pem), "--tls-key", str(pem)]) == 2
    assert "PEM certificate chain" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _presented(port: int, ca: Path) -> bytes | None:
    """The fingerprint the HTTPS port presents to a client trusting `ca`, None if refused."""
    context = ssl.create_default_context(cafile=ca)
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None
    return fingerprint(ssl.DER_cert_to_PEM_cert(der).encode())


def _wait_for(predicate, what: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll `predicate` (generous: a loaded machine starts a server slowly)."""
    deadline = time.monotonic() + 300.0
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(f"no {what} (server exit {proc.poll()}):\n{log.read_text()}")
        time.sleep(0.2)


def _list_models(port: int, ca: Path, token: str) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials(ca.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        try:
            stub.ListModels(
                pb.ListModelsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=30
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_sighup_reloads_certificates_and_tokens(repository, tmp_path):
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = Path(shutil.copy(old.server.cert, live)), Path(shutil.copy(old.server.key, live))
    tokens = live / "tokens.yaml"
    first = make("first", ["infer"], tokens)
    grpc_port, http_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "VISION_API_KEY"}
    command = [
        sys.executable, "-m", "app", "serve", "--models", str(repository),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--tls-cert", str(cert), "--tls-key", str(key), "--auth-tokens", str(tokens),
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(lambda: _presented(http_port, old.ca.pair.cert) is not None, "HTTPS", proc, log)
        _wait_for(
            lambda: _list_models(grpc_port, old.ca.pair.cert, first) == grpc.StatusCode.OK,
            "gRPC over TLS",
            proc,
            log,
        )
        second = make("second", ["infer"], tokens)
        save_tokens(tokens, load_tokens(tokens).without("first").entries)
        assert _list_models(grpc_port, old.ca.pair.cert, second) == grpc.StatusCode.UNAUTHENTICATED
        shutil.copy(new.server.cert, cert)
        shutil.copy(new.server.key, key)
        proc.send_signal(signal.SIGHUP)
        want = fingerprint(new.server.read()[0])
        new_presented = lambda: _presented(http_port, new.ca.pair.cert) == want  # noqa: E731
        _wait_for(new_presented, "new certificate after SIGHUP", proc, log)
        assert _list_models(grpc_port, new.ca.pair.cert, second) == grpc.StatusCode.OK
        assert _list_models(grpc_port, new.ca.pair.cert, first) == grpc.StatusCode.UNAUTHENTICATED
        assert proc.poll() is None  # SIGHUP reloads; it does not stop the server
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "security_reloaded" in text and first not in text and second not in text


@pytest.mark.parametrize(
    ("host", "tls", "warned"),
    [
        ("0.0.0.0", False, "without TLS or tokens"),
        ("0.0.0.0", True, "without tokens"),
        ("127.0.0.1", False, ""),
    ],
)
def test_an_unprotected_public_port_is_warned_about(repository, pki, caplog, host, tls, warned):
    from dataclasses import replace

    from app.server import VisionServer
    from serving.config import ServerConfig
    from serving.security import SecuritySettings, TlsFiles

    files = TlsFiles(pki.server.cert, pki.server.key) if tls else None
    config = replace(
        ServerConfig(), models=repository, host=host, security=SecuritySettings(tls=files)
    )
    server = VisionServer(config)  # not started: nothing listens
    try:
        with caplog.at_level(logging.INFO, logger="app.server"):
            server._log_security()
    finally:
        server.executor.shutdown()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (warned in warnings[0]) if warned else not warnings
    assert any(r.getMessage().startswith("security: ") for r in caplog.records)


def test_sighup_to_the_workers_parent_reloads_every_worker(repository, tmp_path):
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    cert, key = Path(shutil.copy(old.server.cert, live)), Path(shutil.copy(old.server.key, live))
    grpc_port, http_port = _free_port(), _free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "VISION_API_KEY"}
    command = [
        sys.executable, "-m", "app", "serve", "--models", str(repository), "--workers", "2",
        "--grpc-port", str(grpc_port), "--http-port", str(http_port),
        "--tls-cert", str(cert), "--tls-key", str(key),
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for(lambda: log.read_text().count("SERVING gRPC") >= 2, "two workers", proc, log)
        shutil.copy(new.server.cert, cert)
        shutil.copy(new.server.key, key)
        proc.send_signal(signal.SIGHUP)
        want = fingerprint(new.server.read()[0])
        _wait_for(
            lambda: log.read_text().count("security_reloaded") >= 2, "both reloads", proc, log
        )
        # fresh connections land on either worker (SO_REUSEPORT): each presents the new one
        seen = {_presented(http_port, new.ca.pair.cert) for _ in range(12)}
        assert seen == {want}
        assert proc.poll() is None  # the parent forwarded SIGHUP instead of dying of it
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
