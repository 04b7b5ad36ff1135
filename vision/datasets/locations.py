"""Where each shared dataset lives: a folder under the shared datasets root, or one given."""

from __future__ import annotations

from pathlib import Path

from vision.errors import DatasetNotFoundError
from vision.paths import datasets_root

DATASET_DIRS = {
    "bccd": "bccd/BCCD",
    "deeppcb": "deeppcb",
    "drive": "drive/DRIVE",
    "magnetic-tile": "magnetic-tile",
}


def dataset_dir(dataset: str, given: Path | str | None = None) -> Path:
    """The folder of `dataset`: `given` when set, else its folder under `datasets_root()`."""
    if given:
        return Path(given)
    if dataset not in DATASET_DIRS:
        raise DatasetNotFoundError(f"unknown dataset {dataset!r}: {' | '.join(DATASET_DIRS)}")
    return datasets_root() / DATASET_DIRS[dataset]


def existing_dataset_dir(dataset: str, given: Path | str | None = None) -> Path:
    """`dataset_dir`, checked to be a folder (DatasetNotFoundError names the root looked in)."""
    root = dataset_dir(dataset, given)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{root}: dataset not found (shared datasets root: {datasets_root()})"
        )
    return root
