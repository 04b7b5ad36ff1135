"""`vision serve`: run the server over a model repository until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from app.commands.review import add_review_arguments, review_settings_from
from serving.config import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_VOLUME_VOXELS,
    ServerConfig,
)
from serving.security import RateLimit, SecuritySettings, TlsError, TlsFiles, TokenFileError
from vision.paths import default_repository

API_KEY_ENV = "VISION_API_KEY"
API_KEY_REMOVED = (
    "--api-key was removed (a key on the command line is visible in `ps`): make tokens with "
    "`vision token new NAME --role infer --file tokens.yaml` and serve with --auth-tokens "
    f"tokens.yaml, or set {API_KEY_ENV} for one token with every role"
)


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vision serve`."""
    p = argparse.ArgumentParser(prog="vision serve", description=__doc__)
    p.add_argument(
        "--models",
        type=Path,
        default=default_repository(),
        help="model repository folder (default: the bundled models/)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default loopback; --host 0.0.0.0 in a container)",
    )
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument(
        "--http-port", type=int, default=8000, help="KServe v2 REST and /metrics; -1 disables"
    )
    p.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS)
    p.add_argument(
        "--max-volume-voxels",
        type=int,
        default=DEFAULT_MAX_VOLUME_VOXELS,
        help="SegmentVolume and the DICOM node's volumes, as sent and after resampling",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight requests on SIGTERM",
    )
    p.add_argument(
        "--grpc-max-concurrent-rpcs",
        type=int,
        default=0,
        help="refuse gRPC calls beyond this many in flight before reading them (all methods, "
        "streams and health checks count; 0: off)",
    )
    p.add_argument(
        "--kserve-intake",
        type=int,
        default=0,
        help="KServe ModelInfer calls held at once before their message is read (refused "
        "RESOURCE_EXHAUSTED beyond it); 0: the sum of the READY models' admission places",
    )
    p.add_argument(
        "--grpc-stream-window",
        type=int,
        default=0,
        metavar="BYTES",
        help="hold each HTTP/2 stream's window at BYTES (BDP probing off): a refused call "
        "costs at most that much upload; caps one stream at BYTES per round trip; 0: gRPC's "
        "default growing window",
    )
    p.add_argument("--api-key", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the same ports (SO_REUSEPORT), each with its own models",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker
    add_security_arguments(p)
    add_dicom_arguments(p)
    add_review_arguments(p)
    return p


def add_security_arguments(p: argparse.ArgumentParser) -> None:
    """TLS, tokens, metrics, reflection, rate limits and the audit log (docs: README Security)."""
    g = p.add_argument_group("security (SIGHUP reloads certificates and the token file)")
    g.add_argument("--tls-cert", type=Path, help="PEM certificate chain: TLS on both ports")
    g.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    g.add_argument(
        "--tls-client-ca", type=Path, help="PEM CA(s): mutual TLS, clients need a certificate"
    )
    g.add_argument(
        "--auth-tokens",
        type=Path,
        help=f"YAML/JSON file of hashed tokens with roles (`vision token new`); {API_KEY_ENV} "
        "in the environment adds one token with every role",
    )
    g.add_argument(
        "--metrics",
        choices=("public", "token", "off"),
        default="token",
        help="/metrics: public, token (role metrics when auth is on; default), off",
    )
    g.add_argument(
        "--reflection",
        choices=("on", "off"),
        default="on",
        help="gRPC server reflection (needs a valid token when auth is on)",
    )
    g.add_argument(
        "--rate-limit",
        metavar="RPS[:BURST]",
        help="per token (or per peer without one): over it RESOURCE_EXHAUSTED / HTTP 429",
    )
    g.add_argument("--audit-log", type=Path, help="append audit events (JSON lines) here")


def security_from(args: argparse.Namespace) -> SecuritySettings:
    """The security settings the flags describe; ValueError says which flag to fix."""
    if args.api_key is not None:
        raise ValueError(API_KEY_REMOVED)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    return SecuritySettings(
        tokens_file=args.auth_tokens,
        tls=tls,
        metrics=args.metrics,
        reflection=args.reflection == "on",
        rate_limit=RateLimit.parse(args.rate_limit) if args.rate_limit else None,
        audit_file=args.audit_log,
    )


def add_dicom_arguments(p: argparse.ArgumentParser) -> None:
    """The DICOM node's flags (the node is off unless --dicom-port is given)."""
    g = p.add_argument_group("DICOM node (off unless --dicom-port is given)")
    g.add_argument("--dicom-port", type=int, default=None, help="DICOM port, e.g. 11112")
    g.add_argument("--ae-title", default=None, help="the node's AE title (default VISION)")
    g.add_argument(
        "--dicom-destination",
        action="append",
        default=None,
        metavar="AE@HOST:PORT",
        help="where results are sent (repeat for several)",
    )
    g.add_argument("--dicom-config", type=Path, help="YAML file of node settings")
    g.add_argument("--dicom-state-dir", type=Path, help="spool and outbox (default dicom-node/)")
    g.add_argument("--dicom-rules", type=Path, help="routing rules YAML (default: bundled)")
    g.add_argument("--dicom-idle-s", type=float, help="a series is complete after this silence")
    g.add_argument(
        "--dicom-allow-ae", action="append", default=None, help="calling AE allowed (repeat)"
    )
    g.add_argument("--dicom-min-free-mb", type=int, help="refuse associations below this")
    g.add_argument("--dicom-heatmaps", action="store_true", default=None, help="send heat maps")
    g.add_argument(
        "--dicom-deid", action="store_true", default=None, help="de-identify results (PS3.15)"
    )
    g.add_argument("--dicom-deid-key", type=Path, help="de-identification key file")


_DICOM_FLAGS = {
    "dicom_port": "port",
    "ae_title": "ae_title",
    "dicom_destination": "destinations",
    "dicom_state_dir": "state_dir",
    "dicom_rules": "rules_file",
    "dicom_idle_s": "series_idle_s",
    "dicom_allow_ae": "allowed_calling_aes",
    "dicom_min_free_mb": "min_free_disk_mb",
    "dicom_heatmaps": "heatmaps",
    "dicom_deid": "deid",
    "dicom_deid_key": "deid_key_file",
}


def dicom_settings_from(args: argparse.Namespace):
    """The node's settings (config file, then flags), or None when the node is off."""
    if args.dicom_port is None and args.dicom_config is None:
        return None
    from dicom_node.settings import load_node_settings, node_settings

    base = load_node_settings(args.dicom_config) if args.dicom_config else None
    flags = {key: getattr(args, flag) for flag, key in _DICOM_FLAGS.items()}
    given = {k: v for k, v in flags.items() if v is not None}
    if "host" not in given:
        given["host"] = args.host
    return node_settings(given, base)


def config_from(args: argparse.Namespace) -> ServerConfig:
    """The server settings the flags describe."""
    return ServerConfig(
        models=args.models,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        max_message_bytes=args.max_message_bytes,
        max_image_pixels=args.max_image_pixels,
        max_volume_voxels=args.max_volume_voxels,
        drain_timeout_s=args.drain_timeout,
        reuse_port=args.reuse_port,
        grpc_max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
        kserve_intake=args.kserve_intake,
        grpc_stream_window_bytes=args.grpc_stream_window,
        api_key=os.environ.get(API_KEY_ENV, ""),
        security=security_from(args),
    )


async def serve(config: ServerConfig, dicom=None, review=None) -> int:
    """Start the server, stop it gracefully on SIGTERM / SIGINT; exit code 0."""
    from app.server import VisionServer

    server = VisionServer(config, dicom=dicom, review=review)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(server.stop()))
    loop.add_signal_handler(signal.SIGHUP, server.reload_security)
    await server.wait_stopped()
    return 0


def main(argv: list[str]) -> int:
    """`vision serve [flags]`."""
    args = build_parser().parse_args(argv)
    if args.workers != 1:
        from app.commands.workers import serve_workers

        return serve_workers(args, argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from(args)
    except ValueError as exc:  # a flag's value: the message names the flag and the fix
        print(f"vision serve: {exc}", file=sys.stderr)
        return 2
    try:
        review = review_settings_from(args)
        return asyncio.run(serve(config, dicom_settings_from(args), review))
    except (TokenFileError, TlsError) as exc:
        print(f"vision serve: {exc}", file=sys.stderr)
        return 2
