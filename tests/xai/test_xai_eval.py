"""`vision xai-eval`: deletion / insertion, pointing, IoU, randomisation, and a CLI smoke run.

The synthetic cases have a known answer: only one region of the image matters to the model, so a
map on that region must beat random maps and a map off it must lose to them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vision.paths import PROJECT_ROOT, datasets_root
from vision.xai import cam as cam_ops
from vision.xai import faithfulness as fa
from vision.xai.explain_graph import build_explain_module
from vision.xai.sanity import (
    cam_maps,
    cut_points,
    layer_groups,
    randomisation_check,
    relevant_modules,
)

torch.set_num_threads(1)
SIZE = 32
REGION = (slice(8, 16), slice(18, 28))  # rows, columns that the synthetic models look at


def _region_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[REGION] = True
    return mask


def _region_score(images: list[np.ndarray]) -> np.ndarray:
    """A 'model' whose score is the mean brightness inside the region."""
    return np.array([float(im[REGION].mean()) / 255.0 for im in images])


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
    image[REGION] = 230
    return image


def _aucs(heat: np.ndarray, score, steps: int = 8, seeds: int = 3) -> dict[str, tuple]:
    """(map AUC, mean random-map AUC) for deletion and insertion."""
    pixels = _image()
    rng = np.random.default_rng(0)
    baselines = (fa.mean_image(pixels), fa.blurred(pixels))
    fractions = fa.step_fractions(steps)
    heats = [heat, *(fa.random_heat((SIZE, SIZE), rng) for _ in range(seeds))]
    curves = [fa.deletion_insertion(pixels, h, score, steps, rng, baselines) for h in heats]
    return {
        k: (fa.auc(curves[0][k], fractions), np.mean([fa.auc(c[k], fractions) for c in curves[1:]]))
        for k in ("deletion", "insertion")
    }


def test_deletion_insertion_reward_the_right_region_and_punish_the_wrong_one() -> None:
    right = _region_mask().astype(np.float32)
    good = _aucs(right, _region_score)
    assert good["deletion"][0] < 0.5 * good["deletion"][1]
    assert good["insertion"][0] > good["insertion"][1] + 0.05
    bad = _aucs(1.0 - right, _region_score)
    assert bad["deletion"][0] > bad["deletion"][1]
    assert bad["insertion"][0] < bad["insertion"][1]


def test_curves_start_and_end_at_the_image_and_the_baseline() -> None:
    pixels = _image()
    fill = np.zeros_like(pixels)
    order = np.arange(SIZE * SIZE)
    images = fa.perturbed(pixels, fill, order, fa.step_fractions(4))
    assert len(images) == 5
    assert np.array_equal(images[0], pixels) and not images[-1].any()
    assert np.count_nonzero(images[2].any(-1) != pixels.any(-1)) == SIZE * SIZE // 2


class RegionNet(nn.Module):
    """A tiny 'segmenter' whose class-1 logit is large only where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)
        self.box = nn.Conv2d(4, 4, 1)  # a branch the target never reads
        with torch.no_grad():
            self.features.weight.fill_(0.0)
            self.features.weight[:, :, 1, 1] = torch.tensor([1.0, 0.5, -0.5, 0.2])[:, None]
            self.features.bias.fill_(-1.0)
            self.head.weight.copy_(
                torch.tensor([[-1.0, 0, 0, 0], [1.0, 0.5, 0, 0.3]])[..., None, None]
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.features(x))
        return self.head(f), self.box(f)


def _torch_inputs(image: np.ndarray) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0 * 3.0)
    return x, torch.tensor([1]), torch.ones(1, 1, SIZE, SIZE)


def test_gradcam_of_a_real_model_beats_random_on_deletion_and_insertion() -> None:
    model = RegionNet().eval()
    explain = build_explain_module(model, "features", "segmentation", "gradcam")
    heat = cam_maps(explain, [_torch_inputs(_image())])[0]
    assert heat[REGION].mean() > 3 * heat[~_region_mask()].mean()

    def score(images: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            logits = [model(_torch_inputs(im)[0])[0] for im in images]
        return np.array([float(torch.softmax(lg, 1)[0, 1][REGION].mean()) for lg in logits])

    result = _aucs(cam_ops.minmax(heat), score)
    assert result["deletion"][0] < result["deletion"][1]
    assert result["insertion"][0] > result["insertion"][1]


def test_randomisation_cascade_drops_the_rank_correlation() -> None:
    model = RegionNet().eval()
    targets = [_torch_inputs(_image(seed)) for seed in range(3)]
    explain = build_explain_module(model, "features", "segmentation", "gradcam")
    relevant = relevant_modules(explain, targets)
    assert "box" not in relevant and {"head", "features"} <= relevant
    names = [g.name for g in layer_groups(model, targets[0][0], relevant)]
    assert names == ["head", "features"]  # output first; the unread branch left out
    result = randomisation_check(model, "features", "segmentation", "gradcam", targets, seed=1)
    assert [s["layers_randomised"] for s in result["steps"]] == [1, 2]
    assert all(s["abs_spearman_mean"] < 0.9 for s in result["steps"])
    trained = cam_maps(build_explain_module(model, "features", "segmentation", "gradcam"), targets)
    assert fa.spearman(trained[0], trained[0]) == pytest.approx(1.0)  # the model was not changed


def test_spearman_and_cut_points() -> None:
    a = np.array([[0.0, 0.0, 1.0], [2.0, 3.0, 3.0]])
    assert fa.spearman(a, a) == pytest.approx(1.0)
    assert fa.spearman(a, -a) == pytest.approx(-1.0)
    assert fa.spearman(a, np.ones_like(a)) == 0.0
    assert fa.ranks(np.array([5.0, 1.0, 5.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    noise = np.random.default_rng(0).random((2, 64, 64))
    assert abs(fa.spearman(noise[0], noise[1])) < 0.05
    assert cut_points(20, 4) == [1, 7, 14, 20] and cut_points(3, 0) == [1, 2, 3]


def test_pointing_game_and_iou() -> None:
    truth = _region_mask()
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    heat[11, 22] = 1.0  # peak inside the region
    assert fa.pointing_hit(heat, truth)
    far = np.zeros_like(heat)
    far[30, 2] = 1.0
    assert not fa.pointing_hit(far, truth, tolerance=5)
    near = np.zeros_like(heat)
    near[18, 22] = 1.0  # 3 px below the region
    assert not fa.pointing_hit(near, truth) and fa.pointing_hit(near, truth, tolerance=3)
    ious = fa.map_ious(truth.astype(np.float32), truth)
    assert ious == {"iou_threshold": 1.0, "iou_top_area": 1.0}
    assert fa.map_ious(1.0 - truth, truth)["iou_top_area"] == 0.0


MODEL = "blood-cells"
BCCD = datasets_root() / "bccd" / "BCCD"


def test_cli_smoke_on_a_bundled_model(tmp_path: Path) -> None:
    if not BCCD.is_dir():
        pytest.skip(f"{BCCD} is absent: no test images for the {MODEL} smoke run")
    if not (PROJECT_ROOT / "models" / MODEL / "1" / "model.explain.onnx").is_file():
        pytest.skip(f"models/{MODEL} has no explain graph")
    from app.cli import run

    torch.set_num_threads(1)
    args = ["--model", MODEL, "--limit", "1", "--steps", "4", "--seeds", "1", "--out"]
    code = run("xai-eval", [*args, str(tmp_path), "--rand-steps", "2", "--rand-images", "1"])
    assert code == 0
    report = json.loads((tmp_path / "xai_eval.json").read_text())
    assert report["images"] == 1 and report["targets"] >= 1
    assert len(report["deletion"]["curve_gradcam"]) == 5
    for kind in ("deletion", "insertion"):
        assert 0.0 <= report[kind]["gradcam_auc"] <= 1.0
    assert (tmp_path / "deletion_insertion.png").stat().st_size > 1000
    rand = report["randomisation"]
    # No runs/ checkpoint here: the check runs on the weights shipped beside the ONNX file.
    assert "skipped" not in rand, rand
    assert rand["checkpoint_vs_onnx_rel_diff"] < 1e-3
    assert len(rand["steps"]) == 2 and (tmp_path / "randomisation.png").is_file()
    # A detector is judged inside the explained box; the whole-image rho is reported beside it.
    assert rand["verdict"]["judged_on"] == "box_abs_spearman_mean"
    assert {"spearman_mean", "box_abs_spearman_mean", "box_scored"} <= set(rand["steps"][0])
    per_class = report["per_class"]
    assert sum(c["targets"] for c in per_class.values()) == report["targets"]
    assert all(c["deletion"]["n"] == c["targets"] for c in per_class.values())


TILES = datasets_root() / "magnetic-tile"


def test_randomisation_compares_weights_with_the_explained_network_not_the_served_wrapper(
    tmp_path: Path,
) -> None:
    """tile-defects serves a 4-flip average (model.flip4.onnx) of the network its explain graph
    explains: the shipped weights reproduce that network, so the check runs instead of being
    skipped for not reproducing the served graph."""
    if not TILES.is_dir():
        pytest.skip(f"{TILES} is absent: no tiles for the tile-defects run")
    from app.cli import run

    args = ["--model", "tile-defects", "--split", "val", "--limit", "8", "--targets", "1"]
    opts = ["--steps", "2", "--seeds", "1", "--rand-steps", "1", "--rand-images", "1"]
    assert run("xai-eval", [*args, *opts, "--threads", "1", "--out", str(tmp_path)]) == 0
    rand = json.loads((tmp_path / "xai_eval.json").read_text())["randomisation"]
    assert "skipped" not in rand, rand
    assert rand["checkpoint_vs_onnx_rel_diff"] < 1e-3
    assert len(rand["steps"]) == 1
