"""Own image + mask folders: `vision train --images/--masks`, export, eval (tiny budget)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from app.cli import run


def _folder(root: Path, count: int, seed: int) -> tuple[Path, Path]:
    """RGB noise images with one bright square each; the mask marks the square."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 90, (48, 56, 3), dtype=np.uint8)
        mask = np.zeros((48, 56), np.uint8)
        top, left = rng.integers(4, 24), rng.integers(4, 30)
        pixels[top : top + 16, left : left + 16] = 220
        mask[top : top + 16, left : left + 16] = 255
        Image.fromarray(pixels).save(images / f"case{i:02d}.png")
        Image.fromarray(mask).save(masks / f"case{i:02d}.png")
    return images, masks


def test_train_export_eval_on_own_folders(tmp_path: Path) -> None:
    images, masks = _folder(tmp_path / "train", 10, seed=0)
    test_images, test_masks = _folder(tmp_path / "test", 3, seed=1)
    run_dir, repo = tmp_path / "run", tmp_path / "repo"
    train = ["--task", "segmentation", "--images", str(images), "--masks", str(masks)]
    train += ["--test-images", str(test_images), "--test-masks", str(test_masks)]
    train += ["--name", "squares", "--size", "64", "--epochs", "6", "--steps-per-epoch", "6"]
    assert run("train", [*train, "--out", str(run_dir)]) == 0
    splits = json.loads((run_dir / "splits.json").read_text())["splits"]
    assert len(splits["train"]) + len(splits["val"]) == 10 and splits["val"]
    assert not set(splits["train"]) & set(splits["val"])
    export = ["--task", "segmentation", "--checkpoint", str(run_dir / "best.pt")]
    assert run("export", [*export, "--repo", str(repo), "--tolerance", "1.0"]) == 0
    card = json.loads((repo / "squares" / "card.json").read_text())
    assert "test" not in card["metrics"], "export never scores test (vision eval does, last)"
    assert (repo / "squares" / "1" / "model.explain.onnx").is_file(), (
        "export makes the explain graph"
    )
    out = tmp_path / "report"
    assert run("eval", ["--model", "squares", "--repo", str(repo), "--out", str(out)]) == 0
    report = json.loads(next(out.glob("*.json")).read_text())
    assert report["metrics"]["dice"] > 0.5, report["metrics"]  # bright squares are learnable
    assert (
        run("eval", ["--model", "squares", "--repo", str(repo), "--out", str(out), "--update-card"])
        == 0
    )
    card = json.loads((repo / "squares" / "card.json").read_text())
    assert card["metrics"]["test"]["images"] == 3, "--update-card records the test figures"
    other_images, other_masks = _folder(tmp_path / "other", 4, seed=2)
    card_before = (repo / "squares" / "card.json").read_text()
    elsewhere = ["--model", "squares", "--repo", str(repo), "--out", str(tmp_path / "other-report")]
    folders = ["--images", str(other_images), "--masks", str(other_masks)]
    assert run("eval", [*elsewhere, *folders, "--update-card"]) == 0
    other = json.loads(next((tmp_path / "other-report").glob("*.json")).read_text())
    assert other["split"] == "folder" and other["images"] == 4
    assert (repo / "squares" / "card.json").read_text() == card_before, "a folder never goes in"
