"""The node's settings from a YAML file and command-line flags (flags win)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dicom_node.model import Destination, NodeSettings
from vision.errors import ConfigError

_FIELDS = {f.name for f in dataclasses.fields(NodeSettings)}


def _coerce(key: str, value: Any) -> Any:
    if key == "destinations":
        return tuple(Destination.parse(str(v)) for v in value or ())
    if key == "allowed_calling_aes":
        return tuple(str(v) for v in value or ())
    if key in ("state_dir", "rules_file", "deid_key_file"):
        return None if value is None else Path(value)
    if key == "idle_by_calling_ae":
        return {str(k): float(v) for k, v in dict(value or {}).items()}
    return value


def node_settings(values: Mapping[str, Any], base: NodeSettings | None = None) -> NodeSettings:
    """`base` (default settings) with `values` applied; unknown keys are a ConfigError."""
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise ConfigError(f"unknown DICOM node setting(s) {unknown}; known: {sorted(_FIELDS)}")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    try:
        return dataclasses.replace(base or NodeSettings(), **coerced)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"DICOM node settings: {exc}") from exc


def load_node_settings(path: Path) -> NodeSettings:
    """Settings from a YAML file whose keys are NodeSettings' fields."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read DICOM node settings: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: DICOM node settings must be a mapping of setting: value")
    return node_settings(data)
