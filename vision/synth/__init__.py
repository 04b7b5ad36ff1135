"""Synthetic images for rare classes: copy-paste and procedural generators with exact labels,
fitted size/shape/intensity/location distributions, provenance on every image, and online
synthesis (`online.OnlineSynthesis`, injected into segmentation training by its caller).

Reads datasets through `vision.datasets` only; never imports a task package (`vision.detect`,
`vision.segment`). Provenance lives in `vision.datasets.provenance` (re-exported here).
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
