"""Synthetic images for rare classes: copy-paste and procedural generators with exact labels,
fitted size/shape/intensity/location distributions, and provenance on every image.

`vision.synth.cli.synth(argv)` is the `vision synth` command.
"""

from vision.datasets.provenance import (
    Provenance,
    SyntheticDataError,
    assert_no_synthetic,
    is_synthetic,
    read_provenance,
)

__all__ = [
    "Provenance",
    "SyntheticDataError",
    "assert_no_synthetic",
    "is_synthetic",
    "read_provenance",
]
