"""What security costs per call: plaintext vs tokens vs tokens + TLS vs tokens + mutual TLS.

    python -m bench.security [--calls N] [--rounds R]

Starts one `python -m app serve` per setting on loopback over the benchmark's tiny model
(`bench/models.py`), then, interleaved in `--rounds` rounds so a loaded machine slows every
setting alike (and settings take turns every 20 calls), times `--calls` sequential calls on an
open connection of: KServe `ModelInfer`
(gRPC, the tiny model) and `GET /v2/models/tiny/ready` (HTTP, keep-alive). Prints each
setting's median latency and its ratio to plaintext, side by side. Every server is killed at
exit. Needs the dev extra (`cryptography`, for the test-time certificates).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from app.commands.token import make
from bench.loadgen import infer_request
from bench.models import write_repository
from tests.security.certs import Authority

START_TIMEOUT_S = 180.0
SETTINGS = ("plaintext", "tokens", "tokens+TLS", "tokens+mTLS")


@dataclass
class Target:
    """One running server and how to reach it."""

    name: str
    process: subprocess.Popen
    grpc_port: int
    http_port: int
    token: str = ""
    tls: Path | None = None  # the CA to trust
    client: tuple[Path, Path] | None = None  # client cert, key (mTLS)
    grpc_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flags(name: str, folder: Path, pki: dict[str, Path]) -> tuple[list[str], str]:
    if name == "plaintext":
        return [], ""
    tokens = folder / f"{name}-tokens.yaml"
    token = make("bench", ["infer"], tokens)
    flags = ["--auth-tokens", str(tokens)]
    if "TLS" in name:
        flags += ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])]
    if name == "tokens+mTLS":
        flags += ["--tls-client-ca", str(pki["ca"])]
    return flags, token


def _start(name: str, models: Path, folder: Path, pki: dict[str, Path]) -> Target:
    flags, token = _flags(name, folder, pki)
    grpc_port, http_port = _free_port(), _free_port()
    command = [
        sys.executable, "-m", "app", "serve", "--models", str(models),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--log-level", "WARNING",
        *flags,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "VISION_API_KEY"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    tls = pki["ca"] if "TLS" in name else None
    client = (pki["client_cert"], pki["client_key"]) if name == "tokens+mTLS" else None
    return Target(name, process, grpc_port, http_port, token, tls, client)


def _channel(target: Target) -> grpc.Channel:
    address = f"127.0.0.1:{target.grpc_port}"
    if target.tls is None:
        return grpc.insecure_channel(address)
    key = target.client[1].read_bytes() if target.client else None
    cert = target.client[0].read_bytes() if target.client else None
    return grpc.secure_channel(
        address, grpc.ssl_channel_credentials(target.tls.read_bytes(), key, cert)
    )


def _http(target: Target) -> httpx.Client:
    scheme = "https" if target.tls else "http"
    verify: ssl.SSLContext | bool = False
    if target.tls is not None:
        verify = ssl.create_default_context(cafile=target.tls)
        if target.client:
            verify.load_cert_chain(*target.client)
    return httpx.Client(
        base_url=f"{scheme}://127.0.0.1:{target.http_port}", verify=verify, timeout=60
    )


def _metadata(target: Target) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {target.token}"),) if target.token else ()


def _wait_ready(target: Target, payload: bytes) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with _channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        while True:
            if target.process.poll() is not None:
                raise RuntimeError(f"the {target.name} server exited {target.process.returncode}")
            try:
                infer(payload, metadata=_metadata(target), timeout=5)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _timed(call: Callable[[], object], calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


CHUNK = 20  # calls per setting before the next setting's turn


def _calls(target: Target, stack: contextlib.ExitStack, payload: bytes) -> tuple[Callable, ...]:
    """The two timed calls on connections opened (and handshaken) before timing starts."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    channel, client = stack.enter_context(_channel(target)), stack.enter_context(_http(target))
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    metadata = _metadata(target)

    def grpc_call() -> None:
        infer(payload, metadata=metadata, timeout=60)

    def http_call() -> None:
        client.get("/v2/models/tiny/ready", headers=headers).raise_for_status()

    grpc_call()
    http_call()
    return grpc_call, http_call


def _round(targets: list[Target], payload: bytes, calls: int) -> None:
    """`calls` of each kind per setting, in chunks that take turns (drift hits all alike)."""
    with contextlib.ExitStack() as stack:
        pairs = [(t, *_calls(t, stack, payload)) for t in targets]
        for _ in range(max(1, calls // CHUNK)):
            for target, grpc_call, http_call in pairs:
                target.grpc_ms += _timed(grpc_call, CHUNK)
                target.http_ms += _timed(http_call, CHUNK)


def _pki(folder: Path) -> dict[str, Path]:
    ca = Authority(folder / "pki")
    server, client = ca.issue("server", "bench", server=True), ca.issue("client", "c", False)
    return {
        "ca": ca.pair.cert,
        "cert": server.cert,
        "key": server.key,
        "client_cert": client.cert,
        "client_key": client.key,
    }


@contextlib.contextmanager
def _servers(folder: Path) -> Iterator[tuple[list[Target], bytes]]:
    models = folder / "models"
    tiny = write_repository(models, queue_delay_ms=0.0)[1]
    payload = infer_request(tiny.name, "images", tiny.tensor)
    pki = _pki(folder)
    targets: list[Target] = []
    try:
        for name in SETTINGS:
            targets.append(_start(name, models, folder, pki))
        for target in targets:
            _wait_ready(target, payload)
        yield targets, payload
    finally:
        for target in targets:
            if target.process.poll() is None:
                target.process.send_signal(signal.SIGTERM)
        for target in targets:
            try:
                target.process.wait(30)
            except subprocess.TimeoutExpired:
                target.process.kill()


def _report(targets: list[Target]) -> None:
    base_grpc = statistics.median(targets[0].grpc_ms)
    base_http = statistics.median(targets[0].http_ms)
    print(f"{'setting':<14} {'ModelInfer ms':>14} {'ratio':>6} {'REST ready ms':>14} {'ratio':>6}")
    for t in targets:
        grpc_ms, http_ms = statistics.median(t.grpc_ms), statistics.median(t.http_ms)
        print(
            f"{t.name:<14} {grpc_ms:>14.3f} {grpc_ms / base_grpc:>6.2f} "
            f"{http_ms:>14.3f} {http_ms / base_http:>6.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    p = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__)
    p.add_argument("--calls", type=int, default=300, help="timed calls per setting per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-security-") as tmp,
        _servers(Path(tmp)) as (
            targets,
            payload,
        ),
    ):
        for _ in range(args.rounds):
            _round(targets, payload, args.calls)
        _report(targets)
    print(f"(medians of {args.rounds} x {args.calls} sequential calls, loopback, turns of {CHUNK})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
