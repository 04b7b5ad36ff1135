"""De-identification: the DICOM PS3.15 Basic Application Level Confidentiality Profile.

`deidentify(ds, options, key)` returns a de-identified copy and a report; `Deidentifier` holds
the options and key for many objects (the DICOM node's results, a folder). Torch-free; pydicom.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

from vision.deid.core import DeidOptions, DeidResult, deidentify
from vision.deid.keys import DEFAULT_KEY_FILE, load_or_create_key
from vision.deid.method import PrivateTag
from vision.deid.pixels import DeidRefusedError, RegionRule, Regions
from vision.deid.report import DeidReport

__all__ = [
    "DEFAULT_KEY_FILE",
    "DeidOptions",
    "DeidRefusedError",
    "DeidReport",
    "DeidResult",
    "Deidentifier",
    "PrivateTag",
    "RegionRule",
    "Regions",
    "deidentify",
    "load_or_create_key",
]


class Deidentifier:
    """`deidentify` with fixed options and key (the key's bytes are never shown)."""

    def __init__(self, options: DeidOptions, key: bytes) -> None:
        self.options = options
        self._key = key

    @classmethod
    def from_key_file(cls, path: Path, options: DeidOptions | None = None) -> Deidentifier:
        """With the key of `path` (created when absent, see `load_or_create_key`)."""
        return cls(options or DeidOptions(), load_or_create_key(path))

    def apply(self, ds: Dataset) -> DeidResult:
        """One object de-identified (a copy) and its report."""
        return deidentify(ds, self.options, self._key)

    def apply_all(self, datasets: Iterable[Dataset]) -> list[Dataset]:
        """De-identified copies of `datasets`; DeidRefusedError for the first refused one."""
        return [self.apply(ds).dataset for ds in datasets]

    def __repr__(self) -> str:
        return f"Deidentifier({self.options!r}, key <hidden>)"
