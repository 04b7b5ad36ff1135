"""Well-known locations: the bundled model repository and the shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_repository() -> Path:
    """The bundled model repository (`models/` in the project root), or $VISION_MODELS."""
    return Path(os.environ.get("VISION_MODELS", PROJECT_ROOT / "models"))


def datasets_root() -> Path:
    """The shared datasets: $VISION_DATASETS, else `../shared/datasets` beside the project."""
    return Path(os.environ.get("VISION_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


def latest_version(model_dir: Path) -> int:
    """The latest version of a model, by the one rule of `vision.loader.latest_version` (the
    highest integer folder holding the model file); ModelNotFoundError when there is none."""
    from vision.loader import latest_version as latest

    return int(latest(model_dir))
