"""MODEL_CARD.md shows every figure with its n and interval, the definitions and the runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from vision.model_card import ModelCard, model_commit, note_evaluation
from vision.segment.vessel_intervals import binned_auroc, vessel_figures

SHA = "0" * 64


def _card(**extra: object) -> ModelCard:
    base = {"name": "m", "task": "detection", "description": "d", "labels": ["a"]}
    files = {"versions": {"1": {"file": "1/model.onnx", "sha256": SHA, "bytes": 3}}}
    return ModelCard.from_dict(base | files | extra)


def test_figures_table_has_value_interval_and_n_and_flags_a_bare_number() -> None:
    metrics = {
        "test": {
            "mAP50": {"value": 0.9, "n": 72, "ci95": [0.85, 0.93]},
            "AP50_WBC": {"value": 0.97, "n": 72, "instances": 72, "ci95": [0.9, 1.0]},
            "dice": 0.5,
            "dice_ci": {"value": 0.5, "n": 40, "ci95": [0.4, 0.6]},
            "old": 0.25,
            "definitions": {"mAP50": "mean AP"},
        }
    }
    text = _card(metrics=metrics).render_markdown()
    assert "| mAP50 | 0.9000 | 0.8500 – 0.9300 | 72 |" in text
    assert "| AP50_WBC | 0.9700 | 0.9000 – 1.0000 | 72 (instances 72) |" in text
    assert "| dice | 0.5000 | 0.4000 – 0.6000 | 40 |" in text and "| dice_ci" not in text
    assert "| old | 0.2500 | no interval | |" in text
    assert "- `mAP50`: mean AP" in text


def test_protocol_names_the_model_commit_and_says_a_repeated_test(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").write_bytes(b"onnx")
    card: dict = {"limitations": []}
    note_evaluation(card, "test", 5, tmp_path, 1)
    note_evaluation(card, "test", 5, tmp_path, 1)
    runs = card["evaluation"]["runs"]
    assert runs[0]["model_sha256"] == runs[1]["model_sha256"]
    assert "each time of the same model file" in card["limitations"][0]
    (tmp_path / "1" / "model.onnx").write_bytes(b"other weights")
    note_evaluation(card, "test", 5, tmp_path, 1)
    assert "3 times" in card["limitations"][0] and "may have informed" in card["limitations"][0]
    text = _card(evaluation=card["evaluation"], limitations=card["limitations"]).render_markdown()
    assert "## Evaluation protocol" in text and text.count("| test | 5 |") == 3
    assert card["limitations"][0] in text


def test_model_commit_of_a_bundled_model_is_a_commit() -> None:
    from vision.paths import PROJECT_ROOT

    found = model_commit(PROJECT_ROOT / "models" / "retina-vessels", 1)
    assert found["file"] == "1/model.onnx" and len(found["commit"] or "") == 40
    served = model_commit(PROJECT_ROOT / "models" / "tile-defects", 1)  # config: model_file
    assert served["file"] == "1/model.flip4.onnx" and len(served["commit"] or "") == 40


def test_evaluation_hashes_the_file_the_config_serves(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").write_bytes(b"single")
    (tmp_path / "1" / "model.tta.onnx").write_bytes(b"served")
    config = {"name": "m", "task": "segmentation", "labels": ["bg", "x"]}
    config["model_file"] = "model.tta.onnx"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    card: dict = {"limitations": []}
    note_evaluation(card, "val", 5, tmp_path, 1)
    want = hashlib.sha256(b"served").hexdigest()
    assert card["evaluation"]["runs"][0]["model_sha256"] == want


def test_vessel_figures_hold_their_point_and_binned_auroc_is_close() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((40, 40)) < 0.2 for _ in range(6)]
    probs = []
    for m in masks:
        p1 = np.clip(0.6 * m + rng.normal(0.2, 0.2, m.shape), 0, 1)
        probs.append(np.stack([1 - p1, p1]))
    fovs = [np.ones(m.shape, bool) for m in masks]
    figures = vessel_figures(probs, [m.astype(np.uint8) for m in masks], fovs)
    for key in ("dice_pooled", "dice_mean", "iou_pooled", "accuracy_pooled", "auroc_pooled"):
        low, high = figures[key]["ci95"]
        assert low <= figures[key]["value"] <= high and figures[key]["n"] == 6
    scores = np.concatenate([p[1].ravel() for p in probs])
    truth = np.concatenate([m.ravel() for m in masks])
    hist = np.stack([np.histogram(scores[t], 1000, (0, 1))[0] for t in (~truth, truth)])
    assert abs(float(binned_auroc(hist.astype(float))) - figures["auroc_pooled"]["value"]) < 2e-3


REGENERATED = ("blood-cells", "blood-cells-int8", "pcb-defects", "retina-vessels", "hippocampus")


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


@pytest.mark.parametrize("name", REGENERATED)
def test_regenerated_card_is_strict_json_with_every_figure_interval_and_commit(name: str) -> None:
    from vision.model_card import read_model_card
    from vision.paths import PROJECT_ROOT

    folder = PROJECT_ROOT / "models" / name
    json.loads((folder / "card.json").read_text(), parse_constant=_strict)
    card = read_model_card(folder)
    assert "test" in card.metrics and card.evaluation["model_commit"]["commit"]
    for split, figures in card.metrics.items():
        for key, figure in figures.items():
            if key in ("definitions", "images"):
                continue
            assert figure["n"] > 0 and len(figure["ci95"]) == 2, (split, key)
    assert (folder / "MODEL_CARD.md").read_text() == card.render_markdown()
    tests = [run for run in card.evaluation["runs"] if run["split"] == "test"]
    said = [x for x in card.limitations if x.startswith("The test figures were produced")]
    assert bool(said) == (len(tests) > 1)
