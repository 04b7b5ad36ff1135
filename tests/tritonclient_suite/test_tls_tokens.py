"""tritonclient, unmodified, against a server with mutual TLS and tokens (its own process).

Imports tritonclient and never our protos (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from app.commands.token import make
from tests.security.certs import Authority
from tests.serving.tiny_models import build_repository
from tests.tritonclient_suite.conftest import ROOT, free_port

pytest.importorskip("cryptography", reason="test-time certificates need the dev extra")


class Secured:
    """The running server: addresses, the PKI files and a token per role."""


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    import tritonclient.grpc as grpcclient

    folder = tmp_path_factory.mktemp("secured")
    ca = Authority(folder / "pki")
    server, client = ca.issue("server", "vision", server=True), ca.issue("client", "c", False)
    tokens = folder / "tokens.yaml"
    handle = Secured()
    handle.infer, handle.admin = make("i", ["infer"], tokens), make("a", ["admin"], tokens)
    handle.ca, handle.client = ca.pair.cert, client
    port, http_port = free_port(), free_port()
    handle.address, handle.http_address = f"127.0.0.1:{port}", f"127.0.0.1:{http_port}"
    command = [
        sys.executable, "-m", "app", "serve", "--models", str(build_repository(folder / "m")),
        "--grpc-port", str(port), "--http-port", str(http_port), "--auth-tokens", str(tokens),
        "--tls-cert", str(server.cert), "--tls-key", str(server.key),
        "--tls-client-ca", str(ca.pair.cert),
    ]  # fmt: skip
    log = folder / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "VISION_API_KEY"}
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                if _grpc(handle, grpcclient).is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield handle
    finally:
        proc.terminate()
        proc.wait(60)


def _grpc(handle: Secured, grpcclient, client_cert: bool = True):
    cert = handle.client if client_cert else None
    return grpcclient.InferenceServerClient(
        handle.address,
        ssl=True,
        root_certificates=str(handle.ca),
        private_key=str(cert.key) if cert else None,
        certificate_chain=str(cert.cert) if cert else None,
    )


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_grpc_health_open_model_calls_need_the_token_and_role(secured):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = _grpc(secured, grpcclient)
    assert client.is_server_live() and client.is_server_ready()  # health needs no token
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("bright")
    assert "UNAUTHENTICATED" in str(info.value.status())
    assert client.get_model_metadata("bright", headers=_bearer(secured.infer)).name == "bright"
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("bright", headers=_bearer(secured.infer))
    assert "PERMISSION_DENIED" in str(info.value.status())
    images = np.zeros((1, 3, 64, 64), np.float32)
    inputs = [grpcclient.InferInput("images", list(images.shape), "FP32")]
    inputs[0].set_data_from_numpy(images)
    result = client.infer("bright", inputs, headers=_bearer(secured.infer))
    assert result.as_numpy(result.get_response().outputs[0].name) is not None


def test_grpc_without_a_client_certificate_is_refused(secured):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException):
        _grpc(secured, grpcclient, client_cert=False).is_server_live()
