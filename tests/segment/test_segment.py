"""Segmentation: metrics, export helpers, and a tiny train -> export -> eval run on shared data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from vision.config import load_config  # noqa: E402
from vision.datasets import segmentation  # noqa: E402
from vision.export import export_onnx, parity_check, write_repository_entry  # noqa: E402
from vision.paths import datasets_root  # noqa: E402
from vision.quantize import quantize_int8  # noqa: E402
from vision.segment import data as segdata  # noqa: E402
from vision.segment.metrics import defect_metrics, dice_iou  # noqa: E402
from vision.segment.model import build_model, get_recipe, model_config  # noqa: E402

DRIVE = datasets_root() / "drive" / "DRIVE"
TILES = datasets_root() / "magnetic-tile"
needs_drive = pytest.mark.skipif(
    not DRIVE.is_dir(), reason=f"shared DRIVE dataset not found at {DRIVE} (set VISION_DATASETS)"
)
needs_tiles = pytest.mark.skipif(
    not TILES.is_dir(), reason=f"shared magnetic-tile dataset not found at {TILES}"
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _tiny_recipe(name: str = "retina-vessels", size: int = 64):
    return get_recipe(
        name,
        height=size,
        width=size,
        crop=32 if name == "retina-vessels" else 0,
        channels=(8, 16),
        strides=(2,),
        res_units=1,
        batch_size=2,
        steps_per_epoch=2,
        epochs=1,
        minutes=1.0,
    )


def test_dice_iou_edge_cases() -> None:
    a = np.zeros((4, 4), bool)
    assert dice_iou(a, a) == (1.0, 1.0)
    b = a.copy()
    b[:2] = True
    assert dice_iou(b, b) == (1.0, 1.0)
    assert dice_iou(b, ~b) == (0.0, 0.0)


def test_defect_metrics_perfect_prediction() -> None:
    labels = ("background", "a", "b")
    masks = [np.zeros((8, 8), np.int64) for _ in range(3)]
    masks[1][2:4, 2:4] = 1
    masks[2][5:, 5:] = 2
    probs = [np.eye(3, dtype=np.float32)[m].transpose(2, 0, 1) for m in masks]
    metrics = defect_metrics(probs, masks, labels)
    assert metrics["dice"] == 1.0 and metrics["auroc"] == 1.0
    assert metrics["dominant_class_accuracy"] == 1.0


def test_export_parity_quantize_and_repository(tmp_path: Path) -> None:
    recipe = _tiny_recipe()
    model = build_model(recipe).eval()
    path = export_onnx(model, torch.zeros(1, 3, 64, 64), tmp_path / "m.onnx")
    batches = [
        np.random.default_rng(0).normal(size=(n, 3, 64, 64)).astype(np.float32) for n in (1, 3)
    ]
    parity = parity_check(model, path, batches)
    assert parity["max_abs_diff"]["logits"] < 1e-4
    int8 = quantize_int8(path, batches[:1], tmp_path / "q.onnx")
    assert int8.is_file()
    config = model_config(recipe)
    folder = write_repository_entry(tmp_path / "repo", config, path, {"metrics": {}}, version=1)
    assert load_config(folder) == config
    card = json.loads((folder / "card.json").read_text())
    assert len(card["versions"]["1"]["sha256"]) == 64
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "1" / "model.onnx").is_file()
    runs = [
        {"split": "test", "images": 3, "commit": "c1", "utc": "2026-01-01T00:00:00Z"},
        {"split": "test", "images": 3, "commit": "c2", "utc": "2026-01-02T00:00:00Z"},
    ]
    (folder / "card.json").write_text(json.dumps({**card, "evaluation": {"runs": runs}}))
    again = write_repository_entry(tmp_path / "repo", config, path, {"evaluation": {}}, 1)
    card = json.loads((again / "card.json").read_text())
    assert card["evaluation"]["runs"] == runs, "a re-export keeps the test scorings on record"
    assert any("2 times" in line for line in card["limitations"])


@needs_tiles
def test_tile_split_is_stratified_and_fixed(tmp_path: Path) -> None:
    first = segmentation.tile_split(TILES, tmp_path / "a.json")
    again = segmentation.stratified_split(segmentation.tile_index(TILES), seed=0)
    assert first == again
    everything = sum(first.values(), [])
    assert len(everything) == len(set(everything))
    cracks = [p for p in first["test"] if "MT_Crack" in p]
    assert cracks, "every category is represented in the test split"


@needs_drive
def test_training_preprocessing_matches_serving_pipeline() -> None:
    from vision.segment.evaluate import make_pipeline
    from vision.types import Image

    sample = segmentation.load_drive(DRIVE, "test", ["01"])[0]
    config = model_config(get_recipe("retina-vessels"))
    served, _ = make_pipeline(config).preprocess(Image(pixels=sample.image))
    trained, _, _ = segdata.prepare(sample, config)
    assert np.asarray(served).shape == trained.shape
    assert float(np.max(np.abs(np.asarray(served) - trained))) < 0.05


@needs_drive
def test_train_export_eval_tiny(tmp_path: Path) -> None:
    from vision.segment.evaluate import evaluate_model
    from vision.segment.export import export_recipe
    from vision.segment.train import train

    recipe = _tiny_recipe()
    summary = train(recipe, DRIVE, tmp_path / "run")
    assert summary["epochs"] == 1 and (tmp_path / "run" / "best.pt").is_file()
    assert (tmp_path / "run" / "curves.png").is_file()
    resumed = train(recipe, DRIVE, tmp_path / "run", resume=True)
    assert resumed["epochs"] == 1, "resume continues from the last checkpoint"
    code = export_recipe(recipe, tmp_path / "run" / "best.pt", tmp_path / "repo", DRIVE, limit=2)
    assert code == 0
    report = evaluate_model(recipe, tmp_path / "repo", DRIVE, "test", tmp_path / "report", limit=2)
    assert report["images"] == 2 and 0.0 <= report["metrics"]["auroc"] <= 1.0
    assert (tmp_path / "report" / "report.json").is_file()
    assert (tmp_path / "report" / "roc.png").is_file()


def test_crop_dataset_balances_and_centres_on_foreground() -> None:
    from vision.segment.train import CropDataset, Prepared, foreground_dice_ce

    labels = np.zeros((4, 64, 64), np.int64)
    labels[0, 50:54, 50:54] = 2
    data = Prepared(np.zeros((4, 1, 64, 64), np.float32), labels, labels > -1, list("abcd"))
    recipe = get_recipe("tile-defects", height=64, width=64, crop=16)
    dataset = CropDataset(data, recipe, length=200, epoch_seed=0)
    assert 60 < int(np.sum(dataset.order == 0)) < 140, "about half the items have foreground"
    ys = [dataset[i][1] for i in range(len(dataset)) if dataset.order[i] == 0]
    assert np.mean([bool(y.any()) for y in ys]) > 0.4
    logits = torch.zeros(2, 6, 16, 16, requires_grad=True)
    loss = foreground_dice_ce(logits, torch.stack([ys[0], ys[0]])[:, None], [1.0] * 6)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None


def test_recipe_phases_override_extra_and_restart_the_schedule():
    import dataclasses

    from vision.segment.model import get_recipe
    from vision.segment.train import at_epoch

    base = get_recipe("tile-defects")
    phase = {"from_epoch": 6, "ce_weights": [1.0, 1.5], "lr": 1e-3}
    recipe = dataclasses.replace(base, epochs=10, extra={**base.extra, "phases": [phase]})
    early, first, last = at_epoch(recipe, 5)
    assert (early.extra["ce_weights"], early.lr, first, last) == (
        base.extra["ce_weights"],
        base.lr,
        0,
        6,
    )
    late, first, last = at_epoch(recipe, 6)
    assert (late.extra["ce_weights"], late.lr, first, last) == ([1.0, 1.5], 1e-3, 6, 10)
    assert late.extra["fg_center"] == base.extra["fg_center"]  # keys not named stay


def test_letterbox_training_view_keeps_labels_on_their_pixels() -> None:
    """A letterboxed training view: the mask lands on the same (scaled, padded) pixels as the
    image, padding is label 0 and outside the FOV, and the FOV bounds the random crops."""
    import dataclasses

    from vision.segment.train import CropDataset, Prepared

    image = np.full((60, 120, 3), 40, np.uint8)
    image[20:30, 70:90] = 220
    mask = np.zeros((60, 120), np.int64)
    mask[20:30, 70:90] = 1
    recipe = get_recipe("tile-defects", resize="letterbox", height=64, width=64, crop=16)
    sample = segmentation.Sample("a", image, mask, None, "Break", "")
    x, labels, fov = segdata.prepare(sample, model_config(recipe))
    assert x.shape == (1, 64, 64) and labels.shape == fov.shape == (64, 64)
    rows = np.flatnonzero(fov.any(1))
    assert (rows[0], rows[-1]) == (16, 47) and fov.all(1)[rows].all()  # 120x60 -> 64x32, centred
    assert labels.sum() == 50 and not labels[~fov].any()  # 20x10 -> 10x5 pixels
    assert x[0][labels > 0].min() > x[0][fov & (labels == 0)].max()  # bright where labelled
    data = Prepared(x[None], labels[None], fov[None], ["a"])
    no_centring = dataclasses.replace(recipe, extra={**recipe.extra, "fg_center": 0.0})
    dataset = CropDataset(data, no_centring, length=50, epoch_seed=0)
    tops = [dataset._crop_origin(labels, fov, 16)[0] for _ in range(50)]
    assert min(tops) >= 16 and max(tops) <= 47 - 16 + 1


def test_validation_every_n_epochs_and_always_at_the_end() -> None:
    import dataclasses

    from vision.segment.train import _validates

    recipe = get_recipe("tile-defects", epochs=10)
    recipe = dataclasses.replace(recipe, extra={**recipe.extra, "val_every": 4})
    assert [e for e in range(1, 11) if _validates(recipe, e)] == [4, 8, 10]


def test_training_device_follows_the_override(monkeypatch) -> None:
    from vision.segment.train import training_device

    monkeypatch.setenv("VISION_TRAIN_DEVICE", "cpu")
    assert training_device().type == "cpu"
    monkeypatch.delenv("VISION_TRAIN_DEVICE")
    assert training_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_defect_metrics_name_what_they_compute_with_intervals() -> None:
    """Served masks (gated by the image score) on defect and defect-free tiles: Dice over
    defect images, the defect-free mask rate, AUROC, each with n and a 95 % interval."""
    from vision.segment.metrics import defect_metrics

    truth = np.zeros((8, 8), np.int64)
    truth[2:5, 2:5] = 1
    probs_defect = np.stack([np.full((8, 8), 0.9), np.full((8, 8), 0.1)])
    probs_defect[:, 2:5, 2:5] = [[[0.1]], [[0.9]]]
    noisy_clean = probs_defect.copy()  # a defect-free tile where the mask head fires anyway
    probs = [probs_defect, probs_defect, noisy_clean, noisy_clean]
    masks = [truth, truth, np.zeros_like(truth), np.zeros_like(truth)]
    scores = [0.9, 0.8, 0.3, 0.6]
    ungated = defect_metrics(probs, masks, ("background", "defect"), 1, scores, 0.0)
    gated = defect_metrics(probs, masks, ("background", "defect"), 1, scores, 0.5)
    assert ungated["mask_fp_image_rate"] == 1.0 and gated["mask_fp_image_rate"] == 0.5
    assert gated["dice"] == 1.0 and gated["dice_ci"]["n"] == 2
    assert gated["mask_fp_image_rate_ci"]["n"] == 2 and gated["defect_free_images"] == 2
    assert gated["auroc"] == 1.0 and gated["auroc_ci"]["n"] == 4
    assert gated["per_class"]["defect"]["dice_mean"]["value"] == 1.0
    assert "class_accuracy" not in gated and "dominant_class_accuracy" in gated["definitions"]


def test_evaluation_gates_masks_as_the_server_does() -> None:
    """`served_masks` (what `vision eval` and the gate sweep score) keeps or drops each image's
    mask exactly where the server's `decode` does, for both gate rules."""
    from vision.config import PostprocessSpec
    from vision.postprocess import decode
    from vision.segment.metrics import served_masks
    from vision.types import PreprocessMeta

    rng = np.random.default_rng(5)
    meta = PreprocessMeta(16, 16, 1.0, 1.0, 0.0, 0.0, 16, 16)
    logits = [rng.normal(0, 2, (2, 16, 16)).astype(np.float32) for _ in range(24)]
    scores = rng.uniform(0, 1, 24).tolist()
    probs = [np.exp(x) / np.exp(x).sum(0) for x in logits]
    for uses_mask in (False, True):
        spec = PostprocessSpec(
            type="argmax",
            output="logits",
            max_regions=1,
            image_score_output="s",
            image_score_gate=0.55,
            gate_uses_mask_score=uses_mask,
        )
        served = [
            bool(decode({"logits": x, "s": np.float32(s)}, meta, spec, ("bg", "defect")).masks)
            for x, s in zip(logits, scores, strict=True)
        ]
        evaluated = [bool(m.any()) for m in served_masks(probs, 1, scores, 0.55, uses_mask)]
        assert served == evaluated
        assert 0 < sum(served) < 24  # the gate decided something
