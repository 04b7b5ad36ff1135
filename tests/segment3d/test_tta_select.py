"""Choosing the test-time mirroring on the validation split, through the served ONNX path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("nibabel")

from vision.config import load_config  # noqa: E402
from vision.model_card import check_files, read_model_card  # noqa: E402
from vision.paths import default_repository  # noqa: E402
from vision.segment3d.tta_select import CANDIDATES, apply, select  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hippocampus"
MODEL = default_repository() / "hippocampus"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"hippocampus dataset not found at {DATA}")
@pytest.mark.skipif(
    not any(MODEL.glob("*/model.onnx")), reason="models/hippocampus has no model version"
)
def test_selection_scores_every_candidate_on_val_only(tmp_path: Path) -> None:
    splits = tmp_path / "splits.json"
    recorded = json.loads((MODEL / "splits.json").read_text())
    # Only validation cases are given: selection must never need the test split.
    splits.write_text(json.dumps({"splits": {"val": recorded["splits"]["val"][:1]}}))
    result = select(MODEL, DATA, splits, tmp_path / "out", limit_cases=1)
    assert result["split"] == "val" and result["n"] == 1
    assert set(result["candidates"]) == set(CANDIDATES)
    passes = {k: v["passes"] for k, v in result["candidates"].items()}
    assert passes["none"] == 1 and passes["z,y,x"] == 4 and passes["all 7 (nnU-Net)"] == 8
    best = max(v["summary"]["dice_mean"] for v in result["candidates"].values())
    assert result["candidates"][result["chosen"]]["summary"]["dice_mean"] == best
    assert json.loads((tmp_path / "out" / "tta-val.json").read_text())["chosen"] == result["chosen"]


def test_selection_needs_a_validation_split(tmp_path: Path) -> None:
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"splits": {"test": ["x"]}}))
    with pytest.raises(ValueError, match="no val split"):
        select(MODEL, DATA, splits, tmp_path)


@pytest.mark.skipif(
    not any(MODEL.glob("*/model.onnx")), reason="models/hippocampus has no model version"
)
def test_applying_a_choice_serves_it_and_records_it_in_the_card(tmp_path: Path) -> None:
    model_dir = tmp_path / "hippocampus"
    shutil.copytree(MODEL, model_dir)
    result = json.loads((MODEL / "tta-val.json").read_text())
    result = {**result, "chosen": "x", "tta_flips": result["candidates"]["x"]["tta_flips"]}
    apply(model_dir, result)
    assert load_config(model_dir).volume.tta_flips == ((2,),)
    card = read_model_card(model_dir)
    assert card.evaluation["tta_selection"]["chosen"] == "x"
    assert (
        card.evaluation["tta_selection"]["val_dice_mean"]["x"]
        == (result["candidates"]["x"]["summary"]["dice_mean"])
    )
    assert check_files(model_dir, card) == []
    assert json.loads((model_dir / "tta-val.json").read_text())["chosen"] == "x"
