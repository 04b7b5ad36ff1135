"""`write_config` over an existing config.yaml changes what changed and loads back the same."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from vision.config import ModelConfig, load_config, write_config

ROOT = Path(__file__).resolve().parents[2]


def _with_gate(config: ModelConfig, gate: float) -> ModelConfig:
    post = dataclasses.replace(config.postprocess, image_score_gate=gate)
    return dataclasses.replace(config, postprocess=post)


def test_rewriting_one_setting_changes_one_line(tmp_path: Path) -> None:
    """A bundled 2D model's config (no `volume:` section) rewritten with a new gate: only that
    line differs, no default section is added, and the file loads back as the new config."""
    source = (ROOT / "models" / "tile-defects" / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(source)
    config = load_config(tmp_path)
    changed = _with_gate(config, 0.75)
    write_config(changed, tmp_path)
    written = (tmp_path / "config.yaml").read_text()
    before, after = source.splitlines(), written.splitlines()
    differ = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    old = f"  image_score_gate: {config.postprocess.image_score_gate}"
    assert differ == [(old, "  image_score_gate: 0.75")]
    assert "volume" not in yaml.safe_load(written)
    assert load_config(tmp_path) == changed


def test_a_non_default_value_of_a_missing_key_is_added(tmp_path: Path) -> None:
    """A key the file lacks is written when its new value is not the default; a new file
    spells out every key."""
    minimal = {"name": "m", "task": "segmentation", "labels": ["background", "defect"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(minimal))
    config = load_config(tmp_path)
    write_config(_with_gate(config, 0.4), tmp_path)
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data == {**minimal, "postprocess": {"image_score_gate": 0.4}}
    assert load_config(tmp_path) == _with_gate(config, 0.4)
    fresh = tmp_path / "fresh"
    write_config(config, fresh)
    assert yaml.safe_load((fresh / "config.yaml").read_text()) == config.to_dict()
