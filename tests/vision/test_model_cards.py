"""Every bundled model card follows `vision.model_card` and its file entries match the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vision.model_card import (
    SCHEMA_VERSION,
    CardError,
    ModelCard,
    check_files,
    migrate,
    read_model_card,
)
from vision.paths import PROJECT_ROOT

MODELS = PROJECT_ROOT / "models"
BUNDLED = sorted(p.parent.name for p in MODELS.glob("*/card.json"))
FLOAT_MODELS = ("blood-cells", "pcb-defects", "retina-vessels", "tile-defects")
SHA = "0" * 64


def _minimal(**extra: object) -> dict:
    card = {"name": "m", "task": "detection", "description": "d", "labels": ["a"]}
    return card | {"versions": {"1": {"file": "1/model.onnx", "sha256": SHA, "bytes": 3}}} | extra


def test_every_float_model_is_bundled() -> None:
    assert set(FLOAT_MODELS) <= set(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_card_validates_and_its_files_match(name: str) -> None:
    card = read_model_card(MODELS / name)
    assert card.schema_version == SCHEMA_VERSION and card.name == name
    assert card.versions and card.weights is not None
    assert check_files(MODELS / name, card) == []


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_float_model_weights_record_their_recovery_and_parity(name: str) -> None:
    weights = read_model_card(MODELS / name).weights
    assert weights["file"] == "1/weights.safetensors"
    made = ("recovered from 1/model.onnx", "the exported checkpoint's state dict")
    assert any(how in weights["provenance"] for how in made)
    assert weights["parity"]["passed"] and weights["parity"]["images"] >= 2
    assert weights["sha256"] in (MODELS / name / "MODEL_CARD.md").read_text()


def test_card_round_trips_through_json() -> None:
    card = read_model_card(MODELS / "tile-defects")
    assert ModelCard.from_json(card.to_json()) == card
    assert json.loads(card.to_json()) == json.loads(
        (MODELS / "tile-defects" / "card.json").read_text()
    )


@pytest.mark.parametrize(
    "change",
    [
        {"surprise": 1},
        {"task": "classification"},
        {"labels": "a"},
        {"schema_version": 99},
        {"versions": {"1": {"file": "1/model.onnx", "sha256": "abc", "bytes": 3}}},
        {"weights": {"file": "w", "sha256": SHA, "bytes": 3, "format": "x", "provenance": "y"}},
        {"int8": {"kept": "yes"}},
    ],
)
def test_schema_rejects(change: dict) -> None:
    with pytest.raises(CardError):
        ModelCard.from_dict(_minimal(**change))


def test_migrate_moves_old_detection_keys_and_keeps_every_value() -> None:
    old = _minimal(training={"recipe": {"lr": 0.002}, "epochs": 27}, parity={"passed": True})
    old |= {"quantization": {"kept": True, "val_map": 0.9035}, "float_model": "f"}
    new = ModelCard.from_dict(migrate(old))
    assert new.recipe == {"lr": 0.002} and new.training == {"epochs": 27}
    assert new.export == {"parity": {"passed": True}}
    assert new.int8 == {"kept": True, "val_map": 0.9035} and new.int8_of == "f"


def test_check_files_reports_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").write_bytes(b"abc")
    card = ModelCard.from_dict(_minimal())
    assert check_files(tmp_path, card) == [
        "versions.1: " + str(tmp_path / "1" / "model.onnx") + " sha256 differs from the card"
    ]


def test_write_card_migrates_a_legacy_card(tmp_path: Path) -> None:
    from vision.export import write_card

    write_card(tmp_path, _minimal(parity={"passed": True}))
    card = read_model_card(tmp_path)
    assert card.export["parity"]["passed"] and "## Export" in card.render_markdown()


def test_a_test_figure_produced_twice_is_said_so() -> None:
    from vision.model_card import note_evaluation

    card: dict = {"limitations": ["research only"]}
    note_evaluation(card, "val", 10)
    note_evaluation(card, "test", 12)
    assert card["limitations"] == ["research only"], "one test run: nothing to confess"
    note_evaluation(card, "test", 12)
    assert [run["split"] for run in card["evaluation"]["runs"]] == ["val", "test", "test"]
    assert card["evaluation"]["runs"][-1]["images"] == 12
    said = [x for x in card["limitations"] if "2 times" in x]
    assert len(said) == 1 and card["limitations"][0] == "research only"
    note_evaluation(card, "test", 12)
    assert sum("times" in x for x in card["limitations"]) == 1, "one line, updated"
