"""Online synthesis: fresh synthetic training images made while training, with the rare class of
each one drawn class-balanced (inverse to its count of real training instances).

Nothing is written to disk; the sources come from the training split only (`load_sources`), so
nothing from a validation or test image can reach a synthetic one.

`OnlineSynthesis` is a `vision.datasets.extra.ExtraImages`: segmentation training receives it
from its caller (never importing this package); `from_spec` is the matching
`ExtraImagesFactory` for a recipe's `extra["online_synth"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision.datasets.extra import LabelledImage
from vision.datasets.segmentation import TILE_CLASSES
from vision.synth.dataset import Sources, Synthetic, generate_one, load_sources


def balanced_weights(counts: dict[str, int]) -> dict[str, float]:
    """Draw probability per class, inverse to its real instance count (rarer: drawn more)."""
    inverse = {c: 1.0 / max(n, 1) for c, n in counts.items()}
    total = sum(inverse.values())
    return {c: v / total for c, v in inverse.items()}


@dataclass
class OnlineSynthesis:
    """Makes synthetic image `index` on demand; the same (seed, index) gives the same image."""

    sources: Sources
    generator: str = "copy-paste"
    seed: int = 0
    reuse: int = 4  # training batches that each made image serves (different crops)
    per_image: int = 1  # instances per image: 1 to per_image
    options: dict = field(default_factory=dict)  # generate_one options (e.g. paste=PasteConfig)

    def __post_init__(self) -> None:
        counts = {c: len(self.sources.instances[c]) for c in self.sources.classes}
        self.weights = balanced_weights(counts)

    def draw_class(self, index: int) -> str:
        """The class of synthetic image `index` (class-balanced, seeded by the index)."""
        rng = np.random.default_rng([self.seed, index, 1])
        classes = list(self.weights)
        return classes[int(rng.choice(len(classes), p=list(self.weights.values())))]

    def make(self, index: int) -> Synthetic | None:
        """Synthetic image `index` of a class-balanced draw; None when nothing could be placed."""
        cls = self.draw_class(index)
        return generate_one(
            self.sources, self.generator, index, self.seed, self.per_image, cls, **self.options
        )

    def labelled(self, index: int, binary: bool) -> LabelledImage | None:
        """Image `index` with its exact labels (`tile_labels`); None when nothing was placed."""
        item = self.make(index)
        if item is None:
            return None
        return LabelledImage(item.name, item.image, tile_labels(item, binary))

    def source_images(self) -> set[str]:
        """Dataset-relative paths of every instance source and background drawn on."""
        used = {i.source for v in self.sources.instances.values() for i in v}
        return used | {b.rel for b in self.sources.backgrounds}


def from_spec(spec: dict, dataset: str, root: Path, seed: int) -> OnlineSynthesis:
    """The online synthesis of a recipe's `extra["online_synth"]` (classes, generator, reuse),
    from the dataset's training split: the `ExtraImagesFactory` for segmentation training."""
    sources = load_sources(dataset, root, tuple(spec["classes"]), limit=0, seed=seed)
    generator, reuse = spec.get("generator", "copy-paste"), int(spec.get("reuse", 4))
    return OnlineSynthesis(sources, generator, seed, reuse)


def tile_labels(item: Synthetic, binary: bool) -> np.ndarray:
    """HxW int64 labels of a synthetic magnetic-tile image (1, or the class id, where pasted)."""
    labels = np.zeros(item.image.shape[:2], np.int64)
    for placed in item.placed:
        labels[placed.mask] = 1 if binary else TILE_CLASSES.index(placed.class_name) + 1
    return labels
