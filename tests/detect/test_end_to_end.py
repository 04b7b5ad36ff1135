"""A few training steps on shared DeepPCB images, ONNX export with the parity gate, and eval.

Skips when the shared datasets (vision.paths.datasets_root()) are absent.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from vision.config import load_config
from vision.paths import datasets_root

pytestmark = pytest.mark.skipif(
    not (datasets_root() / "deeppcb" / "PCBData").is_dir(),
    reason=f"shared datasets not found at {datasets_root()} (set VISION_DATASETS)",
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vision.detect.recipes import RECIPES
    from vision.detect.train import Trainer

    recipe = dataclasses.replace(
        RECIPES["pcb-defects"],
        height=256,
        width=256,
        crop=128,
        batch=2,
        epochs=3,
        val_every=2,
        minutes=0,
        widths=(8, 16, 16, 16),
        neck=16,
        holdout=4,
    )
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(recipe, out, limit=4)
    state = trainer.fit()
    assert state["epoch"] == 3 and state["step"] == 6
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert (out / "curve.png").is_file()
    history = json.loads((out / "log.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [2, 3], "every val_every-th epoch and the last"
    trainer.resume(out / "last.pt")
    assert trainer.state["step"] == 6
    return out / "best.pt"


@pytest.fixture(scope="module")
def repo(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vision.detect.cli import export

    repo = tmp_path_factory.mktemp("repo")
    argv = ["--checkpoint", str(checkpoint), "--repo", str(repo), "--val-limit", "2", "--int8"]
    assert export(argv) == 0
    return repo


def test_export_writes_a_servable_entry(repo: Path) -> None:
    config = load_config(repo / "pcb-defects")
    assert config.task == "detection" and config.postprocess.type == "yolov8"
    assert config.input.channels == 1 and config.preprocess.channel_order == "GRAY"
    assert config.batching.max_batch_size == 8
    assert (repo / "pcb-defects" / "1" / "model.onnx").is_file()
    card = json.loads((repo / "pcb-defects" / "card.json").read_text())
    parity = card["export"]["parity"]  # vision.model_card schema
    assert parity["passed"]
    assert parity["val_images"] == 2 and 0 <= parity["onnx_val_map"] <= 1
    assert (repo / "pcb-defects" / "1" / "model.int8.onnx").is_file()
    assert 0 <= card["int8"]["val_map"] <= 1


@pytest.mark.skipif(
    importlib.util.find_spec("vision.pipeline") is None, reason="vision.pipeline not present yet"
)
def test_eval_through_onnx(repo: Path, tmp_path: Path) -> None:
    from vision.detect.evaluate import evaluate_detector

    card_before = (repo / "pcb-defects" / "card.json").read_text()
    evaluate_detector("pcb-defects", repo=repo, split="test", limit=2, out=tmp_path / "dry")
    assert (repo / "pcb-defects" / "card.json").read_text() == card_before, "eval left the card"
    returned = evaluate_detector(
        "pcb-defects", repo=repo, split="test", limit=2, out=tmp_path, update_card=True
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert returned["images"] == report["images"] and report["version"] == 1
    assert report["images"] == 2 and "deeppcb" in report and 0 <= report["map50"] <= 1
    assert (tmp_path / "pr_curve.png").is_file() and (tmp_path / "confusion_matrix.png").is_file()
    card = json.loads((repo / "pcb-defects" / "card.json").read_text())
    assert card["evaluation"]["images"] == 2 and "mAP50" in card["metrics"]["test"]
