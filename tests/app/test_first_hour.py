"""A stranger's first hour: a tiny VOC dataset made here, walked through the documented
commands only — train, export (which adds the explain graph), serve, eval (format and data read
from the card, the card left alone), explain."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from app.cli import main as vision
from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc
from tests.serving.conftest import start_server

pytest.importorskip("torch", reason="training needs the train extra (torch)")

SPLITS = {"train": 10, "val": 3, "test": 3}


def _voc_dataset(root: Path) -> Path:
    """Dark 96x96 images with a bright square ('spot') and a grey bar ('bar')."""
    rng = np.random.default_rng(0)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for split, count in SPLITS.items():
        names = [f"{split}{i}" for i in range(count)]
        for name in names:
            image = np.full((96, 96, 3), 20, np.uint8)
            x, y = (int(v) for v in rng.integers(4, 50, 2))
            image[y : y + 24, x : x + 24] = 235
            image[70:80, 10:80] = 120
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg")
            objects = [("spot", (x, y, x + 24, y + 24)), ("bar", (10, 70, 80, 80))]
            xml = "".join(
                f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                for c, b in objects
            )
            (root / "Annotations" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.jpg</filename>{xml}</annotation>"
            )
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_help_works_without_other_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "export", "eval"):
        assert vision([command, "--help"]) == 0, command
        shown = capsys.readouterr().out
        assert (
            "--task" in shown and "vision" in shown and "--minutes" in shown or command != "train"
        )


def test_tiny_voc_dataset_through_the_documented_commands(tmp_path: Path) -> None:
    data = _voc_dataset(tmp_path / "voc")
    run, repo = tmp_path / "run", tmp_path / "models"
    train = ["train", "--format", "voc", "--data", str(data), "--name", "tiny", "--size", "96"]
    assert (
        vision([*train, "--epochs", "2", "--minutes", "2", "--batch", "4", "--out", str(run)]) == 0
    )
    checkpoint = run / "best.pt"
    export = ["export", "--task", "detection", "--checkpoint", str(checkpoint), "--repo", str(repo)]
    assert vision([*export, "--val-limit", "3", "--parity-images", "2"]) == 0
    model_dir = repo / "tiny"
    assert (model_dir / "1" / "model.onnx").is_file()
    assert (model_dir / "1" / "model.explain.onnx").is_file(), "export adds the explain graph"

    server = start_server(repo)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = vision_pb2_grpc.VisionServiceStub(channel)
            image = pb.ImageInput(encoded=(data / "JPEGImages" / "test0.jpg").read_bytes())
            reply = stub.Detect(pb.DetectRequest(model=pb.ModelRef(name="tiny"), image=image))
            assert reply.model_name == "tiny" and reply.image_size.width == 96
    finally:
        server.stop()

    card = (model_dir / "card.json").read_text()
    out = tmp_path / "report"
    assert vision(["eval", "--model", "tiny", "--repo", str(repo), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "voc" and report["images"] == SPLITS["test"]
    assert set(report["instances_per_class"]) == {"bar", "spot"}
    assert (model_dir / "card.json").read_text() == card, "eval rewrote the card unasked"

    explained = tmp_path / "explained"
    test_image = str(data / "JPEGImages" / "test0.jpg")
    assert (
        vision(
            ["explain", test_image, "--model", "tiny", "--repo", str(repo), "--out", str(explained)]
        )
        == 0
    )
    summary = json.loads(next(explained.glob("*.json")).read_text())
    assert "test0" in json.dumps(summary), "explain's summary lists the image"  # a 2-epoch
    # detector may find no box, hence no heat map: this walks the commands, not the model
