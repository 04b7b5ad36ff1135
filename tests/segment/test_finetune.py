"""Stage-2 fine-tune (vision.segment.finetune): served weights in, joint image head, gated
validation as served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("safetensors")

from vision.segment import finetune as ft  # noqa: E402
from vision.segment.image_head import WithImageScore  # noqa: E402
from vision.segment.model import build_model, get_recipe  # noqa: E402
from vision.segment.train import Prepared  # noqa: E402

RECIPE = get_recipe("tile-defects")
LAYERS = RECIPE.extra["image_head"]["layers"]


def _served(tmp_path: Path) -> tuple[WithImageScore, Path]:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = WithImageScore(build_model(RECIPE), LAYERS, np.zeros(2 * (128 + 64)), 0.0).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def _tiles(n_free: int, n_defect: int, size: int = 32) -> Prepared:
    rng = np.random.default_rng(0)
    n = n_free + n_defect
    inputs = rng.normal(0, 1, (n, 1, size, size)).astype(np.float32)
    labels = np.zeros((n, size, size), np.int64)
    labels[n_free:, 8:16, 8:16] = 1
    inputs[n_free:, :, 8:16, 8:16] += 3.0
    return Prepared(inputs, labels, np.ones_like(labels, bool), [f"t{i}" for i in range(n)])


def test_served_weights_load_exactly(tmp_path: Path) -> None:
    model, path = _served(tmp_path)
    loaded = ft.load_served(RECIPE, path).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        (a, sa), (b, sb) = model(x), loaded(x)
    assert torch.equal(a, b) and torch.equal(sa, sb)


def test_batchnorm_stays_in_eval_mode_while_training(tmp_path: Path) -> None:
    model = ft.load_served(RECIPE, _served(tmp_path)[1])
    ft._train_mode(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert model.head.training and model.features.model.training


def test_whole_batches_are_half_defect_free() -> None:
    data = _tiles(n_free=9, n_defect=3)
    x, y, target = ft._whole_batch(data, np.random.default_rng(1), 8)
    assert x.shape == (8, 1, 32, 32) and y.shape == (8, 32, 32)
    assert target.tolist() == [0.0] * 4 + [1.0] * 4
    assert [bool(m.any()) for m in y] == [False] * 4 + [True] * 4, "labels follow the tiles"


def test_joint_steps_train_the_image_head(tmp_path: Path) -> None:
    model = ft.load_served(RECIPE, _served(tmp_path)[1])
    spec = ft._spec(RECIPE) | {"lr": 1e-3, "head_lr": 3e-2}
    optim = ft._optimiser(model, spec, 0.0)
    loss_fn = ft.make_loss(RECIPE)
    data, rng = _tiles(n_free=6, n_defect=6), np.random.default_rng(0)
    crops = (torch.from_numpy(data.inputs[4:8]), torch.from_numpy(data.labels[4:8]))
    ft._train_mode(model)
    head = [ft._step(model, optim, loss_fn, crops, ft._whole_batch(data, rng, 8), spec)["head"]]
    for _ in range(7):
        head.append(
            ft._step(model, optim, loss_fn, crops, ft._whole_batch(data, rng, 8), spec)["head"]
        )
    assert np.mean(head[-3:]) < head[0], head
    probs, scores = ft.predict_with_scores(model, data.inputs)
    assert len(probs) == 12 and probs[0].shape == (2, 32, 32)
    assert np.mean(scores[6:]) > np.mean(scores[:6]), "defect tiles score higher"


def test_gated_summary_picks_the_lowest_gate_within_the_free_rate() -> None:
    masks = [np.zeros((32, 32), np.int64) for _ in range(10)]
    probs = []
    for i in range(10):
        p = np.stack([np.full((32, 32), 0.9), np.full((32, 32), 0.1)])
        if i < 4:
            masks[i][4:12, 4:12] = 1
        if i < 6:  # fires on the 4 defect tiles (exactly) and on free tiles 4 and 5
            p[0, 4:12, 4:12], p[1, 4:12, 4:12] = 0.1, 0.9
        probs.append(p)
    scores = list(np.linspace(1.0, 0.1, 10))  # free tile 4 scores 0.6, tile 5 0.5
    summary = ft.gated_summary(probs, masks, scores, 1, 0.10)
    assert summary["dice_ungated"] == pytest.approx(1.0)
    assert summary["free_rate_ungated"] == pytest.approx(2 / 6)
    assert summary["auroc"] == pytest.approx(1.0)
    assert summary["gate"] == pytest.approx(scores[3]), "just above free tile 4's score"
    assert summary["free_rate_gated"] == 0.0 and summary["dice_gated"] == pytest.approx(1.0)
    strict = ft.gated_summary(probs, masks, [0.5] * 10, 1, 0.10)  # no gate separates them
    assert strict["dice_gated"] == 0.0 and strict["free_rate_gated"] == 0.0


def test_a_saved_epoch_resumes_exactly(tmp_path: Path) -> None:
    model = ft.load_served(RECIPE, _served(tmp_path)[1])
    spec = ft._spec(RECIPE)
    optim = ft._optimiser(model, spec, 0.0)
    data, rng = _tiles(n_free=4, n_defect=4), np.random.default_rng(0)
    crops = (torch.from_numpy(data.inputs[2:6]), torch.from_numpy(data.labels[2:6]))
    ft._train_mode(model)
    ft._step(model, optim, ft.make_loss(RECIPE), crops, ft._whole_batch(data, rng, 4), spec)
    progress = {"epoch": 1, "elapsed": 12.5, "best": 0.7, "history": [{"epoch": 1, "loss": 1.0}]}
    ft._save(tmp_path, model, optim, RECIPE, progress, spec, best=True)
    fresh = ft.load_served(RECIPE, tmp_path / "weights.safetensors")
    fresh_optim = ft._optimiser(fresh, spec, 0.0)
    assert ft._resumed(tmp_path, fresh, fresh_optim, resume=False) is None
    assert ft._resumed(tmp_path, fresh, fresh_optim, resume=True) == progress
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert fresh_optim.state_dict()["state"], "the optimiser's moments come back too"
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 1 and len(best["image_head"]["weight"]) == 384
