"""Volumetric recipe: a tiny train -> export (parity gate, weights) -> ONNX evaluation run on
synthetic NIfTI volumes (no data needed) and on a few hippocampus volumes (skipped without)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
nibabel = pytest.importorskip("nibabel")

from app.commands.tasks import task_of  # noqa: E402
from vision.config import load_config  # noqa: E402
from vision.model_card import check_files, read_model_card  # noqa: E402
from vision.segment3d.data import (  # noqa: E402
    case_names,
    centre_offsets,
    make_split,
    place,
    zscore_nonzero,  # noqa: E402
)
from vision.segment3d.evaluate import bootstrap_ci, evaluate  # noqa: E402
from vision.segment3d.export import export  # noqa: E402
from vision.segment3d.recipe import RECIPES, Recipe3D  # noqa: E402
from vision.segment3d.train import train  # noqa: E402
from vision.weights import load_bundled  # noqa: E402

HIPPOCAMPUS = RECIPES["hippocampus"]
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hippocampus"
TINY = dataclasses.replace(  # one network (the bundled recipe is an ensemble of two)
    HIPPOCAMPUS,
    channels=(4, 8, 16),
    strides=(2, 2),
    num_res_units=1,
    canvas=(16, 24, 16),
    ensemble_seeds=(),
)


def _ellipsoids(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Labels 1 and 2: two touching ellipsoids, jittered."""
    z, y, x = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    labels = np.zeros(shape, np.uint8)
    front = ((z - c[0]) / 5) ** 2 + ((y - c[1] + 4) / 5) ** 2 + ((x - c[2]) / 4) ** 2 < 1
    back = ((z - c[0]) / 5) ** 2 + ((y - c[1] - 4) / 5) ** 2 + ((x - c[2]) / 4) ** 2 < 1
    labels[front], labels[back & ~front] = 1, 2
    return labels


def _write_msd(root: Path, n: int = 8) -> Path:
    """A folder in the MSD layout with `n` synthetic cases (NIfTI arrays are i, j, k = x, y, z)."""
    rng = np.random.default_rng(0)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        labels = _ellipsoids((20 + i % 3, 28, 18), rng)
        image = 100 + 50 * labels + rng.normal(0, 5, labels.shape)
        for folder, array in (("imagesTr", image.astype(np.float32)), ("labelsTr", labels)):
            nifti = nibabel.Nifti1Image(array.transpose(2, 1, 0), np.eye(4))
            nibabel.save(nifti, str(root / folder / f"case_{i:03d}.nii.gz"))
    return root


def _run(recipe: Recipe3D, root: Path, tmp: Path, steps: int, limit: int) -> tuple[Path, dict]:
    run, repo, splits = tmp / "run", tmp / "repo", tmp / "splits.json"
    summary = train(recipe, root, run, splits, max_steps=steps, limit_cases=limit)
    assert summary["steps"] == steps and (run / "best.pt").is_file()
    assert (run / "curve.png").is_file() and (run / "log.json").is_file()
    model_dir = export(run / "best.pt", repo, root, splits, run)
    report = evaluate(model_dir, root, splits, "test", run, limit_cases=2 if limit else 0)
    return model_dir, report


def _check_entry(model_dir: Path, report: dict) -> None:
    card = read_model_card(model_dir)
    assert card.task == "volumetric_segmentation" and check_files(model_dir, card) == []
    assert card.export["parity"]["passed"] and card.weights["parity"]["passed"]
    assert "CC BY-SA 4.0" in card.data["licence"] and card.data["citation"]
    assert load_config(model_dir).volume.patch == tuple(card.recipe["canvas"])
    for key in ("dice_anterior", "dice_posterior"):
        assert report["metrics"][key]["n"] == report["n"] and 0 <= report["summary"][key] <= 1
    assert (model_dir.parent.parent / "run" / "eval-test.png").is_file()
    assert "training_curves.png" in card.files and (model_dir / "training_log.json").is_file()


def test_synthetic_train_export_evaluate(tmp_path: Path) -> None:
    root = _write_msd(tmp_path / "data")
    model_dir, report = _run(TINY, root, tmp_path, steps=2, limit=0)
    _check_entry(model_dir, report)
    assert report["n"] == 2 and "test" in read_model_card(model_dir).metrics


def test_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    root = _write_msd(tmp_path / "data", n=5)
    run, splits = tmp_path / "run", tmp_path / "splits.json"
    train(TINY, root, run, splits, max_steps=1)
    summary = train(TINY, root, run, splits, resume=True, max_steps=3)
    assert summary["steps"] == 3
    assert json.loads((run / "log.json").read_text())["history"][-1]["steps"] == 3


@pytest.mark.skipif(not DATA.is_dir(), reason=f"hippocampus dataset not found at {DATA}")
def test_hippocampus_tiny_run_through_onnx(tmp_path: Path) -> None:
    model_dir, report = _run(TINY, DATA, tmp_path, steps=2, limit=4)
    _check_entry(model_dir, report)


def test_split_is_seeded_disjoint_and_complete() -> None:
    names = [f"c{i:03d}" for i in range(186)]
    split = make_split(names, (0.7, 0.1, 0.2), seed=0)
    assert split == make_split(names, (0.7, 0.1, 0.2), seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == [130, 19, 37]
    assert sorted(sum(split.values(), [])) == names


def test_place_pads_and_crops_around_the_centre() -> None:
    array = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    window = place(array, (3, 8, 7), centre_offsets(array.shape, (3, 8, 7)))
    assert window.shape == (3, 8, 7) and (window[:, 1:7] == array[1:4]).all()
    assert (window[:, 0] == 0).all() and (window[:, 7] == 0).all()


def test_zscore_over_nonzero_voxels_keeps_zeros() -> None:
    image = np.array([0.0, 1.0, 2.0, 3.0])
    out = zscore_nonzero(image)
    assert out[0] == 0 and abs(out[1:].mean()) < 1e-6 and abs(out[1:].std() - 1) < 1e-6


def test_bootstrap_interval_contains_the_mean_and_counts_the_finite() -> None:
    ci = bootstrap_ci([0.8, 0.9, 0.85, float("inf")])
    assert ci["n"] == 3 and ci["not_finite"] == 1
    assert ci["ci95"][0] <= ci["mean"] <= ci["ci95"][1]


def test_recipe_dispatches_to_the_volumetric_package() -> None:
    assert task_of(["--recipe", "hippocampus"]) == "volumetric_segmentation"


BUNDLED = Path(__file__).resolve().parents[2] / "models" / "hippocampus"
needs_bundled = pytest.mark.skipif(
    not (BUNDLED / "card.json").is_file(), reason="models/hippocampus not exported yet"
)


@needs_bundled
def test_bundled_split_is_recorded_and_covers_the_cases() -> None:
    split = json.loads((BUNDLED / "splits.json").read_text())["splits"]
    assert [len(split[k]) for k in ("train", "val", "test")] == [130, 19, 37]
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))
    if DATA.is_dir():
        assert sorted(sum(split.values(), [])) == case_names(DATA)


@needs_bundled
def test_bundled_onnx_matches_monai_sliding_window_on_its_weights() -> None:
    """The served path (vision.volume over ONNX) against MONAI's sliding window over torch."""
    from monai.inferers import sliding_window_inference

    from vision.segment3d.evaluate import OnnxVolumeSegmenter
    from vision.volume.types import Volume

    segmenter = OnnxVolumeSegmenter(BUNDLED)
    rng = np.random.default_rng(1)
    voxels = rng.normal(100, 20, (37, 53, 35)).astype(np.float32)
    tensor, _ = segmenter.pipeline.preprocess(Volume(voxels=voxels, spacing_mm=(1.0, 1.0, 1.0)))
    spec = segmenter.config.volume
    from vision.volume.window import sliding_window

    ours = sliding_window(tensor, spec.patch, spec.overlap, segmenter.run, 4, spec.blend)
    model = load_bundled("hippocampus", BUNDLED.parent)
    with torch.no_grad():
        theirs = sliding_window_inference(
            torch.from_numpy(tensor[None]),
            spec.patch,
            4,
            model,
            overlap=spec.overlap,
            mode=spec.blend,
            sigma_scale=spec.sigma_scale,
        )[0]
    probs_ours = segmenter.pipeline.probabilities(ours)
    probs_theirs = torch.softmax(theirs, 0).numpy()
    assert np.abs(probs_ours - probs_theirs).max() <= 1e-4
