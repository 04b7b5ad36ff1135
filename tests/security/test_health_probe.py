"""`python -m serving.health_probe` (the images' HEALTHCHECK, the Kubernetes exec probes) against
real servers: plaintext, TLS and mutual TLS, settings from flags or the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.health_probe import main as probe
from serving.security import SecuritySettings, TlsFiles
from tests.security.conftest import start_secured

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plain(repository):
    running = start_secured(repository, SecuritySettings())
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mutual(repository, pki):
    files = TlsFiles(pki.server.cert, pki.server.key, pki.ca.pair.cert)
    running = start_secured(repository, SecuritySettings(tls=files))
    yield running
    running.stop()


def _env(pki, address: str, client: bool = True) -> dict[str, str]:
    env = {"VISION_PROBE_ADDRESS": address, "VISION_PROBE_TLS_CA": str(pki.ca.pair.cert)}
    if client:
        env["VISION_PROBE_TLS_CERT"] = str(pki.client.cert)
        env["VISION_PROBE_TLS_KEY"] = str(pki.client.key)
    return env


def test_plaintext_serving(plain):
    assert probe(["--address", plain.address], environ={}) == 0


def test_mutual_tls_from_environment_as_the_healthcheck_runs_it(mutual, pki):
    env = {**os.environ, **_env(pki, mutual.address), "VISION_PROBE_TIMEOUT_S": "30"}
    done = subprocess.run(
        [sys.executable, "-m", "serving.health_probe"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_mutual_tls_without_client_certificate_fails(mutual, pki, capsys):
    assert probe(["--timeout", "30"], environ=_env(pki, mutual.address, client=False)) == 1
    assert "not serving at" in capsys.readouterr().err


def test_plaintext_probe_against_tls_fails(mutual, capsys):
    assert probe(["--address", mutual.address, "--timeout", "10"], environ={}) == 1
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err, err


def test_tls_probe_against_plaintext_fails(plain, pki):
    env = _env(pki, plain.address)
    assert probe(["--timeout", "10"], environ=env) == 1


def test_certificate_without_ca_is_refused(plain, pki, capsys):
    args = ["--address", plain.address, "--tls-cert", str(pki.client.cert)]
    assert probe(args + ["--tls-key", str(pki.client.key)], environ={}) == 1
    assert "--tls-ca" in capsys.readouterr().err


def test_nothing_listening_fails(capsys):
    assert probe(["--address", "127.0.0.1:9", "--timeout", "5"], environ={}) == 1
    assert "127.0.0.1:9" in capsys.readouterr().err
