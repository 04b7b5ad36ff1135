"""Synthetic images as an extra training source: loading a `vision synth` folder and mixing it
into batches at a fixed ratio. Evaluation splits stay real (`assert_no_synthetic`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vision.datasets.detection import load_deeppcb, load_voc
from vision.datasets.provenance import SyntheticDataError, is_synthetic

SYNTH_SPLIT = "synth"


def per_batch(batch_size: int, ratio: float) -> int:
    """Synthetic items in each batch: round(ratio * batch), at least 1 when ratio > 0."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"--synthetic-ratio must be in [0, 1): {ratio}")
    if ratio == 0.0:
        return 0
    return min(max(1, round(ratio * batch_size)), batch_size - 1)


def mixed_positions(length: int, batch_size: int, ratio: float, seed: int) -> np.ndarray:
    """Boolean mask over `length` items: True where the item is synthetic; exactly
    `per_batch(batch_size, ratio)` per full batch, at seeded positions within the batch."""
    return defect_positions(np.ones(length, bool), batch_size, ratio, seed)


def defect_positions(
    has_defect: np.ndarray, batch_size: int, ratio: float, seed: int
) -> np.ndarray:
    """Like `mixed_positions`, but only where the real image already shows a defect
    (`has_defect`, one flag per item): synthetic images, each of which shows one, then replace
    defect images only, and each batch keeps the share of defect-free images the real order
    gave it (fewer synthetic items in a batch with fewer defect images than the ratio asks).
    With every flag set it is `mixed_positions`, draw for draw."""
    rng = np.random.default_rng(seed)
    k = per_batch(batch_size, ratio)
    mask = np.zeros(len(has_defect), bool)
    for start in range(0, len(has_defect), batch_size):
        size = min(batch_size, len(has_defect) - start)
        count = k if size == batch_size else round(ratio * size)
        candidates = start + np.flatnonzero(has_defect[start : start + size])
        mask[rng.choice(candidates, min(count, len(candidates)), replace=False)] = True
    return mask


class MixedBatchSampler:
    """Batches of indices into ConcatDataset([real, synthetic]): each batch has
    `per_batch(batch_size, ratio)` synthetic indices (offset by `n_real`), the rest real."""

    def __init__(
        self, n_real: int, n_synth: int, batch_size: int, ratio: float, batches: int, seed: int
    ) -> None:
        if n_synth == 0 and ratio > 0:
            raise ValueError("a synthetic ratio > 0 needs synthetic images")
        self.n_real, self.n_synth, self.batch_size = n_real, n_synth, batch_size
        self.k, self.batches, self.seed, self.epoch = per_batch(batch_size, ratio), batches, seed, 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        real = rng.permutation(self.n_real)
        n_real_per = self.batch_size - self.k
        for b in range(self.batches):
            take = [(b * n_real_per + j) % self.n_real for j in range(n_real_per)]
            picks = [int(real[t]) for t in take]
            picks += [self.n_real + int(i) for i in rng.integers(0, self.n_synth, self.k)]
            yield [picks[i] for i in rng.permutation(len(picks))]


def require_provenance(paths: list[Path], where: Path) -> None:
    """Refuse a synthetic folder whose images do not all carry provenance."""
    missing = [str(p) for p in paths if not is_synthetic(p)]
    if missing:
        raise SyntheticDataError(
            f"{len(missing)} image(s) under {where} have no synthetic provenance (write them with "
            f"`vision synth`): {', '.join(missing[:3])}"
        )


def tile_relpaths(folder: Path) -> list[str]:
    """The magnetic-tile-layout images of a synthetic folder, relative to it."""
    folder = Path(folder)
    paths = sorted(folder.glob("MT_*/Imgs/*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no synthetic magnetic-tile images under {folder}")
    require_provenance(paths, folder)
    return [str(p.relative_to(folder)) for p in paths]


def detection_samples(folder: Path, fmt: str, classes: tuple[str, ...]) -> list:
    """Synthetic detection samples (BCCD VOC or DeepPCB layout, split `synth`) with labels in
    the real dataset's class order `classes`; every image must carry provenance."""
    folder = Path(folder)
    if fmt == "voc":
        root = folder / "BCCD" if (folder / "BCCD").is_dir() else folder
        samples, _ = load_voc(root, SYNTH_SPLIT, tuple(classes))
    elif fmt == "deeppcb":
        samples, _ = load_deeppcb(folder, SYNTH_SPLIT)
    else:
        raise ValueError(f"synthetic detection data is voc (bccd) or deeppcb, not {fmt!r}")
    if not samples:
        raise FileNotFoundError(f"no synthetic images listed under {folder}")
    require_provenance([s.image for s in samples], folder)
    return samples
