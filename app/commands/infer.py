"""`vision infer`: send one image to a running server, print the findings, write PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from serving.client import VisionClient
from serving.client_args import add_client_security_args, client_tls, client_token
from serving.security.tls import ClientTls, TlsError
from vision.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vision infer`."""
    p = argparse.ArgumentParser(prog="vision infer", description=__doc__)
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
    add_client_security_args(p)
    return p


def _print_detections(response) -> None:
    for d in response.detections:
        b = d.box
        print(f"{d.label:<16} {d.score:.3f}  [{b.x1:.1f}, {b.y1:.1f}, {b.x2:.1f}, {b.y2:.1f}]")


def _print_masks(response) -> None:
    for m in response.masks:
        area = f"  {m.physical_area_mm2:.2f} mm²" if m.HasField("physical_area_mm2") else ""
        print(f"{m.label:<16} {m.score:.3f}  {m.pixel_area} px{area}")
    if response.HasField("image_score"):
        print(f"image score      {response.image_score:.3f}")


def infer(
    image: Path,
    model: str,
    server: str,
    version: str = "",
    overlay: Path | None = None,
    explain_dir: Path | None = None,
    api_key: str = "",
    tls: ClientTls | None = None,
) -> int:
    """Send `image` to `model` on `server`; print the findings; write the PNGs asked for.

    `api_key` is any bearer token; `tls` the files of a TLS or mutual-TLS channel."""
    try:
        client = VisionClient(server, api_key=api_key, tls=tls)
    except TlsError as exc:
        raise ConfigError(f"vision infer: {exc}") from exc
    with client:
        task = client.metadata(model, version).task
        explain = client.explain_options(overlay=True) if explain_dir else False
        call = client.detect if task == "detection" else client.segment
        response = call(model, image, version, overlay=overlay is not None, explain=explain)
        (_print_detections if task == "detection" else _print_masks)(response)
        print(
            f"{response.model_name} v{response.model_version}: "
            f"{response.timings.total_ms:.1f} ms in the server"
        )
        if overlay is not None:
            overlay.write_bytes(response.overlay_png)
            print(f"overlay written to {overlay}")
        if explain_dir:
            _write_heatmaps(response, explain_dir, image.stem)
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


def main(argv: list[str]) -> int:
    """`vision infer IMAGE --model NAME [flags]`."""
    a = build_parser().parse_args(argv)
    token, tls = client_token(a), client_tls(a)
    return infer(a.image, a.model, a.server, a.version, a.overlay, a.explain, token, tls)
