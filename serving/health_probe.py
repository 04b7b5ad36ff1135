"""`python -m serving.health_probe`: exit 0 when the server's gRPC health says SERVING.

The container's HEALTHCHECK and the Kubernetes exec probes run it. It speaks plaintext unless
given a CA, then TLS (and mutual TLS with a client certificate and key), from flags or from the
environment, so the image's HEALTHCHECK follows the deployment's TLS settings:

| flag | environment | meaning |
|---|---|---|
| `--address` | `VISION_PROBE_ADDRESS` | gRPC address (default 127.0.0.1:8001) |
| `--tls-ca` | `VISION_PROBE_TLS_CA` | PEM CA that signed the server: TLS on |
| `--tls-cert`, `--tls-key` | `VISION_PROBE_TLS_CERT`, `VISION_PROBE_TLS_KEY` | mutual TLS |
| `--server-name` | `VISION_PROBE_SERVER_NAME` | the name in the server certificate |
| `--timeout` | `VISION_PROBE_TIMEOUT_S` | seconds (default 4) |

Exit codes: 0 SERVING, 1 anything else (NOT_SERVING, unreachable, refused); the reason is one
line on stderr. Health never needs a token (docs/security.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.security.tls import ClientTls, TlsError

ENV = {
    "address": "VISION_PROBE_ADDRESS",
    "tls_ca": "VISION_PROBE_TLS_CA",
    "tls_cert": "VISION_PROBE_TLS_CERT",
    "tls_key": "VISION_PROBE_TLS_KEY",
    "server_name": "VISION_PROBE_SERVER_NAME",
    "timeout": "VISION_PROBE_TIMEOUT_S",
}


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The probe's flags, each defaulting to its environment variable."""
    p = argparse.ArgumentParser(prog="python -m serving.health_probe", description=__doc__)
    env = {key: environ.get(name) or None for key, name in ENV.items()}
    p.add_argument("--address", default=env["address"] or "127.0.0.1:8001")
    p.add_argument("--tls-ca", type=Path, default=env["tls_ca"])
    p.add_argument("--tls-cert", type=Path, default=env["tls_cert"])
    p.add_argument("--tls-key", type=Path, default=env["tls_key"])
    p.add_argument("--server-name", default=env["server_name"])
    p.add_argument("--timeout", type=float, default=float(env["timeout"] or 4.0))
    return p


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, TLS or mutual-TLS channel to the server, as the arguments say."""
    if args.tls_ca is None:
        if args.tls_cert or args.tls_key:
            raise TlsError("--tls-cert/--tls-key need --tls-ca (VISION_PROBE_TLS_CA)")
        return grpc.insecure_channel(args.address)
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    credentials = ClientTls(args.tls_ca, args.tls_cert, args.tls_key).credentials()
    return grpc.secure_channel(args.address, credentials, options=options)


def check(args: argparse.Namespace) -> tuple[bool, str]:
    """Whether the whole server (service "") is SERVING, and what was seen."""
    try:
        channel = open_channel(args)
    except TlsError as exc:
        return False, str(exc)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Probe once; 0 when SERVING, else 1 with the reason on stderr."""
    args = build_parser(os.environ if environ is None else environ).parse_args(argv)
    ok, seen = check(args)
    if not ok:
        print(f"not serving at {args.address}: {seen}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
