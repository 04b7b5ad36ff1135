"""Volumetric ensembles: members trained concurrently per seed, exported as one network whose
softmax is the members' mean (parity gate, shipped weights, the card's per-member record)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("nibabel")

from tests.segment3d.test_segment3d import TINY, _write_msd  # noqa: E402
from vision.model_card import check_files, read_model_card  # noqa: E402
from vision.runtime import OnnxModel  # noqa: E402
from vision.segment3d.ensemble import SoftmaxMean, member_checkpoints  # noqa: E402
from vision.segment3d.evaluate import evaluate  # noqa: E402
from vision.segment3d.export import export, load_checkpoint  # noqa: E402
from vision.segment3d.recipe import build_network, build_unet  # noqa: E402
from vision.segment3d.train import train_members  # noqa: E402
from vision.weights import load_bundled  # noqa: E402

PAIR = dataclasses.replace(TINY, ensemble_seeds=(3, 4))


def test_softmax_mean_is_the_mean_of_the_members_probabilities() -> None:
    torch.manual_seed(0)
    members = [build_unet(TINY).eval() for _ in range(3)]
    x = torch.randn(2, 1, *TINY.canvas)
    with torch.no_grad():
        got = SoftmaxMean(members)(x).softmax(1)
        want = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, members[0](x).softmax(1), atol=1e-3)


def test_members_train_concurrently_and_export_as_one_network(tmp_path: Path) -> None:
    root = _write_msd(tmp_path / "data", n=6)
    run, repo, splits = tmp_path / "run", tmp_path / "repo", tmp_path / "splits.json"
    summary = train_members(PAIR, root, run, splits, threads=2, max_steps=2)
    assert set(summary) == {"seed3", "seed4"} and all(s["steps"] == 2 for s in summary.values())
    paths = member_checkpoints(run, PAIR.ensemble_seeds)
    first, second = (load_checkpoint(p)[0] for p in paths)
    assert not torch.equal(
        first.state_dict()["model.0.conv.unit0.conv.weight"],
        second.state_dict()["model.0.conv.unit0.conv.weight"],
    )

    model_dir = export(paths, repo, root, splits, run)
    card = read_model_card(model_dir)
    assert check_files(model_dir, card) == []
    assert card.export["parity"]["passed"] and card.weights["parity"]["passed"]
    assert card.export["parity"]["max_abs_probability_diff"] <= 1e-4
    assert [m["seed"] for m in card.training["members"]] == [3, 4]
    assert "mean of the softmax of 2 networks" in card.architecture
    assert {"training_log_seed3.json", "training_log_seed4.json"} <= set(card.files)

    x = np.random.default_rng(0).normal(size=(1, 1, *PAIR.canvas)).astype(np.float32)
    served = OnnxModel(model_dir / "1" / "model.onnx").run({"images": x})["logits"]
    with torch.no_grad():
        probs = [m(torch.from_numpy(x)).softmax(1).numpy() for m in (first, second)]
    served_probs = torch.from_numpy(served).softmax(1).numpy()
    assert np.abs(served_probs - np.mean(probs, axis=0)).max() < 1e-4

    bundled = load_bundled("hippocampus", repo)
    assert isinstance(bundled, SoftmaxMean) and len(bundled.members) == 2
    assert isinstance(build_network(PAIR), SoftmaxMean)
    report = evaluate(model_dir, root, splits, "val", run)
    assert report["n"] >= 1


def test_missing_member_checkpoint_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train the members first"):
        member_checkpoints(tmp_path, (1, 2))


def test_the_export_gate_is_on_probabilities_not_logits() -> None:
    """Logits far apart where the probabilities agree pass; probabilities apart fail and say so."""
    from vision.errors import ConfigError
    from vision.segment3d.export import _gate

    agree = {"max_abs_diff": {"logits": 5e-3}, "max_abs_probability_diff": 2e-5}
    report = _gate({**agree, "batch_sizes": [1, 3]}, 1e-4, "export parity")
    assert report["passed"] and report["gated"] == "max_abs_probability_diff"
    assert report["volumes"] == 4
    apart = {"max_abs_diff": {"logits": 1e-6}, "max_abs_probability_diff": 2e-4}
    with pytest.raises(ConfigError, match="probability difference 2.00e-04"):
        _gate({**apart, "batch_sizes": [1]}, 1e-4, "export parity")
