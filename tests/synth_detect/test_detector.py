"""Real-vs-synthetic detector: learns a real artifact, not file cues; check CLI; tile lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from vision.datasets.provenance import Provenance, write_image
from vision.paths import datasets_root
from vision.synth_detect.cli import synth_detect
from vision.synth_detect.detector import (
    STRIDE,
    Detector,
    Item,
    aligned_views,
    box_cells,
    canonical,
    folder_items,
    sample_crop,
    tile_real_items,
    window_clear_of,
)
from vision.synth_detect.workflow import source_leaks

torch = pytest.importorskip("torch")
from vision.synth_detect.report import metrics, score  # noqa: E402
from vision.synth_detect.train import (  # noqa: E402
    TrainConfig,
    build_model,
    check_parity,
    export_onnx,
    flip_averaged,
    train,
)

TILES = datasets_root() / "magnetic-tile"
SIZE = 80


def _texture(rng: np.random.Generator) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)), (0, 0), 2.0)
    return np.clip(128 + 30 * noise / noise.std(), 0, 255).astype(np.uint8)


def _write_set(folder: Path, n: int, seed: int, artifact: bool) -> None:
    """n real JPEGs (no provenance) and n synthetic PNGs (provenance, a box each); the synthetic
    pixels get a checkerboard patch only when `artifact`."""
    rng = np.random.default_rng(seed)
    (folder / "real").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_texture(rng)).save(folder / "real" / f"r{i}.jpg", quality=95)
        image = _texture(rng)
        x, y = (int(v) for v in rng.integers(8, SIZE - 24, 2))
        if artifact:
            board = (np.indices((12, 12)).sum(0) % 2) * 70 - 35
            image[y : y + 12, x : x + 12] = np.clip(image[y : y + 12, x : x + 12] + board, 0, 255)
        params = {"instances": [{"box": [x, y, x + 12, y + 12], "blend": "alpha"}]}
        prov = Provenance("copy-paste", params, [{"path": f"r{i}.jpg"}], seed)
        write_image(folder / "synth" / f"s{i}.png", image, prov)


def _fit_and_score(tmp: Path, artifact: bool) -> tuple[dict, Path]:
    _write_set(tmp / "train", 30, 1, artifact)
    _write_set(tmp / "test", 30, 2, artifact)
    train_items = folder_items([tmp / "train"])
    assert sum(it.synthetic for it in train_items) == 30
    cfg = TrainConfig(steps=40, batch=16, crop=40, lr=3e-3, seed=0)
    model, _ = train(train_items, cfg, log=lambda _m: None)
    path = export_onnx(model, tmp / "detector.onnx", {"threshold": 0.5})
    scores = score(Detector(path), folder_items([tmp / "test"]))
    return metrics(scores, 0.5, {"copy-paste-alpha"}), path


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> tuple[dict, Path]:
    return _fit_and_score(tmp_path_factory.mktemp("artifact"), artifact=True)


def test_learns_a_real_artifact(learned) -> None:
    gen = learned[0]["generators"]["copy-paste-alpha"]
    assert gen["seen_in_training"] and gen["n"] == 30
    assert gen["balanced_accuracy"] >= 0.8, gen
    assert gen["auc"] >= 0.9, gen


def test_identical_pixels_stay_near_chance(tmp_path) -> None:
    """Same pixel distribution, but synthetic = PNG with provenance, real = plain JPEG: a
    detector that used the format or the metadata would separate them perfectly."""
    gen = _fit_and_score(tmp_path, artifact=False)[0]["generators"]["copy-paste-alpha"]
    assert 0.3 <= gen["balanced_accuracy"] <= 0.7, gen
    assert 0.25 <= gen["auc"] <= 0.75, gen


def test_evaluate_rescores_a_saved_detector_exactly_as_train_did(tmp_path) -> None:
    """`train` then `evaluate` on its detector.pt: same threshold, same per-generator figures."""
    sets = []
    for name, n, seed, flags in [
        ("train", 24, 1, ("--real-train", "--synthetic")),
        ("val", 10, 3, ("--real-val", "--val-synthetic")),
        ("test", 16, 2, ("--real-test", "--test-synthetic")),
    ]:
        _write_set(tmp_path / name, n, seed, artifact=True)
        sets += [flags[0], str(tmp_path / name / "real"), flags[1], str(tmp_path / name / "synth")]
    trained, again = tmp_path / "trained", tmp_path / "again"
    fit = ["--steps", "30", "--batch", "8", "--crop", "64", "--out", str(trained)]
    assert synth_detect(["train", *sets, *fit]) == 0
    rescore = ["--detector", str(trained / "detector.pt"), "--out", str(again)]
    assert synth_detect(["evaluate", *sets, *rescore]) == 0
    first, second = (json.loads((d / "report.json").read_text()) for d in (trained, again))
    assert second["threshold"] == first["threshold"] != 0.5  # set on the validation images
    assert second["generators"] == first["generators"]
    assert second["training"]["steps"] == 30
    assert second["source_leaks"] == first["source_leaks"]


def test_check_command_prints_probabilities(learned, tmp_path, capsys) -> None:
    image = tmp_path / "incoming.jpg"
    Image.fromarray(_texture(np.random.default_rng(9))).save(image, quality=90)
    assert synth_detect(["check", str(image), "--detector", str(learned[1])]) == 0
    path, prob, verdict = capsys.readouterr().out.strip().split("\t")
    assert path == str(image) and 0.0 <= float(prob) <= 1.0
    assert verdict in ("real", "synthetic")


def test_check_runs_without_torch(learned, tmp_path) -> None:
    """The check path is serving-safe: it runs with torch made unimportable."""
    image = tmp_path / "incoming.png"
    Image.fromarray(_texture(np.random.default_rng(3))).save(image)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from app.cli import main\n"
        f"sys.exit(main(['synth-detect', 'check', {str(image)!r}, '--detector', "
        f"{str(learned[1])!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(image))


def test_input_ignores_size_and_crops_at_native_resolution() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 200), dtype=np.uint8)
    crop = sample_crop(pixels, [(150, 5, 160, 15)], 48, rng)
    assert crop.shape == (48, 48)
    assert canonical(pixels).shape == (2, 64, 200)  # padded to MIN_SIDE, never resized


def test_source_leaks_counts_synthetic_made_from_test_images(tmp_path) -> None:
    prov = Provenance("procedural", {"instances": []}, [{"path": "MT_Free/Imgs/a.jpg"}], 0)
    synth = write_image(tmp_path / "s.png", np.zeros((8, 8), np.uint8), prov)
    train_items = [Item(synth, True, "procedural")]
    assert source_leaks(train_items, [Item(Path("x/MT_Free/Imgs/a.jpg"), False, "Free")]) == 1
    assert source_leaks(train_items, [Item(Path("x/MT_Free/Imgs/b.jpg"), False, "Free")]) == 0


@pytest.mark.skipif(
    not TILES.is_dir(), reason=f"shared dataset not found at {TILES} (set VISION_DATASETS)"
)
def test_tile_real_items_split_by_file_with_defect_boxes() -> None:
    train_items, test_items = tile_real_items(TILES, "train"), tile_real_items(TILES, "test")
    assert not {it.path for it in train_items} & {it.path for it in test_items}
    assert all(not it.synthetic for it in train_items + test_items)
    defects = [it for it in test_items if it.group != "Free"]
    assert defects and all(it.boxes for it in defects)


def test_box_cells_mark_the_logit_cells_over_the_box() -> None:
    """Cell (i, j) is centred on crop pixel (32i, 32j); a crop at (100, 200) sees the image box
    x 240..250, y 170..180 at x 40..50, y 70..80: columns 1-2, rows 2-3."""
    cells = box_cells([(240, 170, 250, 180)], top=100, left=200, size=128)
    expected = np.zeros((4, 4), bool)
    expected[2:4, 1:3] = True
    np.testing.assert_array_equal(cells, expected)
    far = box_cells([(900, 900, 910, 910)], top=0, left=0, size=128)
    assert far.sum() == 1 and far[3, 3]  # out of reach: the nearest cell stands in


def test_aligned_views_cover_the_image_with_edges_on_cell_boundaries() -> None:
    """Check-time views: sides are whole cells (as in training), together they cover every
    pixel, and each is an unaltered window of the image."""
    pixels = np.arange(103 * 250).reshape(103, 250)
    views = aligned_views(pixels)
    assert len(views) == 4
    np.testing.assert_array_equal(views[0], pixels[:96, :224])
    np.testing.assert_array_equal(views[3], pixels[7:, 26:])
    covered = np.zeros(pixels.shape, bool)
    for view in views:
        assert view.shape == (96, 224)
        covered |= np.isin(pixels, view)
    assert covered.all()
    whole = np.zeros((64, 128), np.uint8)
    assert len(aligned_views(whole)) == 1 and aligned_views(whole)[0].shape == (64, 128)
    tiny = aligned_views(np.zeros((20, 70), np.uint8))
    assert all(v.shape[0] % STRIDE == 0 and v.shape[1] % STRIDE == 0 for v in tiny)


def test_background_windows_stay_clear_of_the_paste() -> None:
    rng = np.random.default_rng(0)
    box = (100, 60, 140, 90)
    for _ in range(50):
        top, left = window_clear_of((200, 300), [box], 64, rng)
        assert (
            left + 64 + 8 <= box[0]
            or left - 8 >= box[2]
            or top + 64 + 8 <= box[1]
            or (top - 8 >= box[3])
        )
    assert window_clear_of((64, 64), [(0, 0, 64, 64)], 64, rng) is None


def test_check_cost_bench_prints_its_ratio(learned, capsys) -> None:
    from bench.synth_detect import main

    images = learned[1].parent / "test"
    assert main(["--detector", str(learned[1]), "--images", str(images), "--limit", "6"]) == 0
    out = capsys.readouterr().out
    assert "6 images" in out and "check / whole image:" in out


def test_export_is_checked_against_torch(tmp_path) -> None:
    """The exported graph matches its torch scorer, and the check notices a different one."""
    model = build_model(width=8).eval()
    path = export_onnx(model, tmp_path / "d.onnx", {"threshold": 0.5}, vertical=True)
    assert check_parity(flip_averaged(model, vertical=True), path) < 1e-3
    with pytest.raises(RuntimeError, match="differs from torch"):
        check_parity(flip_averaged(model, vertical=False), path, atol=1e-6)
