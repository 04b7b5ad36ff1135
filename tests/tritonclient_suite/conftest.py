"""Runs only in its own pytest process (see tests/serving/test_kserve_wire.py).

One `vision serve` subprocess, with both ports: gRPC (`address`) and HTTP (`http_address`).

tritonclient's generated protobuf module and ours both define the protobuf package
`inference`, and protobuf refuses two files with the same names in one process; so this
suite imports tritonclient and never our protos, and talks to `vision serve` in a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.tiny_models import build_repository

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    repo = build_repository(tmp_path_factory.mktemp("models"))
    port, http_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("log") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "serve",
                "--models",
                str(repo),
                "--host",
                "127.0.0.1",
                "--grpc-port",
                str(port),
                "--http-port",
                str(http_port),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
    address = f"127.0.0.1:{port}"
    client = grpcclient.InferenceServerClient(address)
    http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.is_server_ready() and http.is_server_ready():
                break
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start:\n{log.read_text()}")
        time.sleep(0.2)
    client.close()
    http.close()

    class Handle:
        pass

    handle = Handle()
    handle.address = address
    handle.http_address = f"127.0.0.1:{http_port}"
    yield handle
    proc.terminate()
    assert proc.wait(30) == 0, log.read_text()
