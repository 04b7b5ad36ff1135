"""Hippocampus volumes (MSD Task04): reading, the fixed split, normalisation, canvas placement.

Arrays are (z, y, x): the NIfTI array (i, j, k) transposed, as `vision.volume` holds volumes.
Intensities are z-scored over the nonzero voxels (zeros stay zero), the served
`normalisation: zscore_nonzero`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision.paths import datasets_root


@dataclass
class Case:
    """One labelled volume: normalised image and integer labels, both (z, y, x)."""

    name: str
    image: np.ndarray
    labels: np.ndarray


def dataset_root(given: str | Path | None = None) -> Path:
    """The hippocampus folder: `given`, else `<shared datasets>/hippocampus`."""
    return Path(given) if given else datasets_root() / "hippocampus"


def case_names(root: Path) -> list[str]:
    """Names (file stems) of the labelled cases, sorted."""
    return sorted(p.name.removesuffix(".nii.gz") for p in (root / "labelsTr").glob("*.nii.gz"))


def read_nifti(path: Path) -> np.ndarray:
    """A NIfTI volume as a (z, y, x) array (the stored i, j, k axes reversed)."""
    import nibabel

    return np.asarray(nibabel.load(str(path)).dataobj).transpose(2, 1, 0)


def zscore_nonzero(image: np.ndarray) -> np.ndarray:
    """(v - mean) / std over the voxels != 0; zero voxels stay 0 (MONAI NormalizeIntensity)."""
    image = image.astype(np.float32)
    mask = image != 0
    if not mask.any():
        return image
    values = image[mask].astype(np.float64)
    std = float(values.std()) or 1.0
    out = np.zeros_like(image)
    out[mask] = ((values - values.mean()) / std).astype(np.float32)
    return out


def load_case(root: Path, name: str) -> Case:
    """Read and normalise one labelled case (float labels are cast to integers)."""
    image = read_nifti(root / "imagesTr" / f"{name}.nii.gz")
    labels = np.rint(read_nifti(root / "labelsTr" / f"{name}.nii.gz")).astype(np.int64)
    return Case(name, zscore_nonzero(image), labels)


def make_split(names: list[str], fractions: tuple[float, ...], seed: int) -> dict[str, list]:
    """A seeded train/val/test split of `names` (sorted lists)."""
    order = np.random.default_rng(seed).permutation(sorted(names))
    n_val = max(1, round(fractions[1] * len(order)))
    n_test = max(1, round(fractions[2] * len(order)))
    n_train = len(order) - n_val - n_test
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    return {k: sorted(str(n) for n in v) for k, v in parts.items()}


def fixed_split(
    root: Path, path: Path, fractions: tuple[float, ...], seed: int
) -> dict[str, list[str]]:
    """The split recorded at `path`; made (and written) from `root`'s cases when absent."""
    if path.is_file():
        return json.loads(path.read_text())["splits"]
    splits = make_split(case_names(root), fractions, seed)
    record = {"dataset": "hippocampus (MSD Task04, labelled cases)", "seed": seed}
    record |= {"fractions": list(fractions), "counts": {k: len(v) for k, v in splits.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, "splits": splits}, indent=2) + "\n")
    return splits


def centre_offsets(shape: tuple[int, ...], canvas: tuple[int, ...]) -> tuple[int, ...]:
    """Where a volume starts in a canvas-sized window centred on it (negative: it is cropped);
    for a smaller volume, where MONAI's sliding window pads it to."""
    return tuple((c - s) // 2 for s, c in zip(shape, canvas, strict=True))


def place(array: np.ndarray, canvas: tuple[int, ...], offsets: tuple[int, ...]) -> np.ndarray:
    """A `canvas`-shaped window with `array` starting at `offsets` (negative: cropped), zeros
    where the array does not reach."""
    out = np.zeros(canvas, array.dtype)
    src, dst = [], []
    for size, c, o in zip(array.shape, canvas, offsets, strict=True):
        start, stop = max(-o, 0), min(size, c - o)
        src.append(slice(start, stop))
        dst.append(slice(start + o, stop + o))
    out[tuple(dst)] = array[tuple(src)]
    return out
