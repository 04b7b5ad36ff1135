"""`vision serve`: run the server over a model repository until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from app.commands.review import add_review_arguments, review_settings_from
from serving.config import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_VOLUME_VOXELS,
    ServerConfig,
)
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
    p.add_argument("--api-key", default="", help="require 'authorization: Bearer KEY'")
    p.add_argument("--log-level", default="INFO")
    add_dicom_arguments(p)
    add_review_arguments(p)
    return p


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
        api_key=args.api_key,
    )


async def serve(config: ServerConfig, dicom=None, review=None) -> int:
    """Start the server, stop it gracefully on SIGTERM / SIGINT; exit code 0."""
    from app.server import VisionServer

    server = VisionServer(config, dicom=dicom, review=review)
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
    review = review_settings_from(args)
    return asyncio.run(serve(config_from(args), dicom_settings_from(args), review))
