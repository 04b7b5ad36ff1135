"""`vision infer` against a running server prints results and writes an overlay PNG."""

from __future__ import annotations

import cv2
import numpy as np

from app.cli import main
from app.commands.serve import build_parser


def test_serve_defaults_follow_triton_ports():
    args = build_parser().parse_args([])
    assert (args.grpc_port, args.http_port) == (8001, 8000)
    assert args.models.name == "models"


def test_infer_prints_masks_and_writes_overlay(server, tmp_path, capsys):
    image = np.zeros((50, 80), np.uint8)
    image[10:30, 20:60] = 255
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), image)
    overlay = tmp_path / "overlay.png"
    code = main(
        [
            "infer",
            str(path),
            "--model",
            "bright",
            "--server",
            server.address,
            "--overlay",
            str(overlay),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "bright" in out and " px" in out
    assert cv2.imread(str(overlay)).shape == (50, 80, 3)


def test_infer_prints_boxes(server, tmp_path, capsys):
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), np.zeros((128, 128, 3), np.uint8))
    assert main(["infer", str(path), "--model", "boxes", "--server", server.address]) == 0
    out = capsys.readouterr().out
    assert "defect" in out and "dust" in out
