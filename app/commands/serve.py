"""`vision serve`: run the server over a model repository until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from serving.config import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_MESSAGE_BYTES, ServerConfig
from vision.paths import default_repository


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vision serve`."""
    p = argparse.ArgumentParser(prog="vision serve", description=__doc__)
    p.add_argument(
        "--models",
        type=Path,
        default=default_repository(),
        help="model repository folder (default: the bundled models/)",
    )
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument(
        "--http-port", type=int, default=8000, help="KServe v2 REST and /metrics; -1 disables"
    )
    p.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS)
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight requests on SIGTERM",
    )
    p.add_argument("--api-key", default="", help="require 'authorization: Bearer KEY'")
    p.add_argument("--log-level", default="INFO")
    return p


def config_from(args: argparse.Namespace) -> ServerConfig:
    """The server settings the flags describe."""
    return ServerConfig(
        models=args.models,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        max_message_bytes=args.max_message_bytes,
        max_image_pixels=args.max_image_pixels,
        drain_timeout_s=args.drain_timeout,
        api_key=args.api_key,
    )


async def serve(config: ServerConfig) -> int:
    """Start the server, stop it gracefully on SIGTERM / SIGINT; exit code 0."""
    from app.server import VisionServer

    server = VisionServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(server.stop()))
    await server.wait_stopped()
    return 0


def main(argv: list[str]) -> int:
    """`vision serve [flags]`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(serve(config_from(args)))
