"""Extra training images made on demand (online synthesis), as training code sees them.

Segmentation training takes an `ExtraImages` object from its caller and never imports the
synthesis packages: whoever composes training with synthesis (the `vision train` command, the
paired experiment) builds one (`vision.synth.online.OnlineSynthesis`) and passes it in, or
passes an `ExtraImagesFactory` that builds it from a recipe's `extra["online_synth"]` spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class LabelledImage:
    """One made image: HxWxC uint8 pixels and HxW int64 class ids (0 = background)."""

    name: str
    image: np.ndarray
    labels: np.ndarray


class ExtraImages(Protocol):
    """Makes labelled training image `index` on demand; the same index gives the same image."""

    reuse: int  # training batches that each made image serves

    def labelled(self, index: int, binary: bool) -> LabelledImage | None:
        """Image `index` with class-id labels (1 for any class when `binary`); None when
        nothing could be made."""
        ...

    def source_images(self) -> set[str]:
        """The dataset-relative images it draws on (checked against the training split)."""
        ...


class ExtraImagesFactory(Protocol):
    """Builds the `ExtraImages` a recipe's `extra["online_synth"]` spec asks for."""

    def __call__(self, spec: dict, dataset: str, root: Path, seed: int) -> ExtraImages:
        """The extra images of `spec` for `dataset` under `root`, seeded with `seed`."""
        ...
