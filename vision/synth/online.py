"""Online synthesis: fresh synthetic training images made while training, with the rare class of
each one drawn class-balanced (inverse to its count of real training instances).

Nothing is written to disk; the sources come from the training split only (`load_sources`), so
nothing from a validation or test image can reach a synthetic one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vision.synth.dataset import Sources, Synthetic, generate_one


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
        rng = np.random.default_rng([self.seed, index, 1])
        classes = list(self.weights)
        return classes[int(rng.choice(len(classes), p=list(self.weights.values())))]

    def make(self, index: int) -> Synthetic | None:
        """Synthetic image `index` of a class-balanced draw; None when nothing could be placed."""
        cls = self.draw_class(index)
        return generate_one(
            self.sources, self.generator, index, self.seed, self.per_image, cls, **self.options
        )


def tile_labels(item: Synthetic, binary: bool) -> np.ndarray:
    """HxW int64 labels of a synthetic magnetic-tile image (1, or the class id, where pasted)."""
    from vision.segment.data import TILE_CLASSES

    labels = np.zeros(item.image.shape[:2], np.int64)
    for placed in item.placed:
        labels[placed.mask] = 1 if binary else TILE_CLASSES.index(placed.class_name) + 1
    return labels
