"""The `vision` command: serve, infer, and the domain commands (train, export, eval)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from serving.config import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_MESSAGE_BYTES, ServerConfig
from vision.paths import default_repository

DOMAIN_COMMANDS = {
    "train": "train a reference model or one on your own data (train extra)",
    "export": "export a checkpoint to ONNX, parity-gated, into the repository (train extra)",
    "eval": "evaluate a repository model through the server's ONNX path (train extra)",
    "synth": "write synthetic rare-class images with exact labels, provenance (train extra)",
    "synth-detect": "real-vs-synthetic detector: train, evaluate (train extra); check (ONNX)",
    "synth-eval": "paired experiment: train without/with synthetic images, score real tests",
    "explain": "write Grad-CAM overlay PNGs for an image (in-process, torch-free)",
    "explain-export": "add a Grad-CAM explain graph to a repository model (train extra)",
    "xai-eval": "score Grad-CAM quality: deletion/insertion, randomisation, pointing (train extra)",
}


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC server over a model repository")
    p.add_argument(
        "--models",
        type=Path,
        default=default_repository(),
        help="model repository folder (default: the bundled models/)",
    )
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000, help="metrics; -1 disables")
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


def _infer_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="send one image to a running server and print the result")
    p.add_argument("image", type=Path)
    p.add_argument("--model", required=True)
    p.add_argument("--version", default="")
    p.add_argument("--server", default="localhost:8001")
    p.add_argument("--overlay", type=Path, help="write the image with results drawn, as PNG")
    p.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="also ask for a heat map per finding; write each blended over the image as a PNG "
        "into DIR (the model needs an explain graph)",
    )
    p.add_argument("--api-key", default="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _infer_parser(sub)
    for name, text in DOMAIN_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


async def _serve(config: ServerConfig) -> int:
    from serving.rpc.server import VisionServer

    server = VisionServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(server.stop()))
    await server.wait_stopped()
    return 0


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(
        models=args.models,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        max_message_bytes=args.max_message_bytes,
        max_image_pixels=args.max_image_pixels,
        drain_timeout_s=args.drain_timeout,
        api_key=args.api_key,
    )
    return asyncio.run(_serve(config))


def infer(args: argparse.Namespace) -> int:
    from serving.client import VisionClient

    with VisionClient(args.server, api_key=args.api_key) as client:
        task = client.metadata(args.model, args.version).task
        want_overlay = args.overlay is not None
        explain = client.explain_options(overlay=True) if args.explain else False
        if task == "detection":
            response = client.detect(
                args.model, args.image, args.version, overlay=want_overlay, explain=explain
            )
            for d in response.detections:
                b = d.box
                print(
                    f"{d.label:<16} {d.score:.3f}  [{b.x1:.1f}, {b.y1:.1f}, {b.x2:.1f}, {b.y2:.1f}]"
                )
        else:
            response = client.segment(
                args.model, args.image, args.version, overlay=want_overlay, explain=explain
            )
            for m in response.masks:
                area = f"  {m.physical_area_mm2:.2f} mm²" if m.HasField("physical_area_mm2") else ""
                print(f"{m.label:<16} {m.score:.3f}  {m.pixel_area} px{area}")
            if response.HasField("image_score"):
                print(f"image score      {response.image_score:.3f}")
        print(
            f"{response.model_name} v{response.model_version}: "
            f"{response.timings.total_ms:.1f} ms in the server"
        )
        if want_overlay:
            args.overlay.write_bytes(response.overlay_png)
            print(f"overlay written to {args.overlay}")
        if args.explain:
            _write_heatmaps(response, args.explain, args.image.stem)
    return 0


def _write_heatmaps(response, folder: Path, stem: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, heatmap in enumerate(response.heatmaps):
        path = folder / f"{stem}-{index:02d}-{heatmap.label or heatmap.class_id}.png"
        path.write_bytes(heatmap.overlay_png)
    print(
        f"{len(response.heatmaps)} heat map(s) ({response.explain_method}, "
        f"{response.timings.explain_ms:.1f} ms) written to {folder}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DOMAIN_COMMANDS:
        from vision.cli import run

        return run(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return {"serve": serve, "infer": infer}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
