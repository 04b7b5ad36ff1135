"""Segmentation readers: DRIVE, magnetic-tile and image+mask folders, and recorded splits.

Plain numpy (no torch): images through the server's decoder (`vision.io.read_image`), label
masks as stored (PIL).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from vision.errors import DatasetNotFoundError
from vision.io import read_image, to_uint8

TILE_CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
TILE_FREE = "Free"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Sample:
    """One labelled image: HxWxC uint8 pixels, HxW int64 class ids, optional HxW bool FOV mask."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray | None = None
    category: str = ""  # image-level class ("" when not applicable)
    path: str = ""  # the encoded image file, when there is one


def _read(path: Path) -> np.ndarray:
    """A label mask as stored, read with PIL (labels, not images: GIF vessel masks, which the
    server does not decode, and palette PNGs, whose indices OpenCV would turn into colours)."""
    with PILImage.open(path) as im:
        return np.array(im)


def _image(path: Path) -> np.ndarray:
    """An image as the server decodes it (`vision.io.read_image`): HxWx1 or HxWx3 RGB uint8."""
    return to_uint8(read_image(path))


def load_drive(root: Path, split: str, names: list[str] | None = None) -> list[Sample]:
    """DRIVE `training` or `test` images (RGB), 1st_manual vessel masks and FOV masks."""
    base = Path(root) / ("training" if split == "training" else "test")
    samples = []
    for path in sorted((base / "images").glob("*.tif")):
        number = path.stem.split("_")[0]
        if names is not None and number not in names:
            continue
        vessels = _read(base / "1st_manual" / f"{number}_manual1.gif") > 127
        fov = _read(base / "mask" / f"{path.stem}_mask.gif") > 127
        samples.append(
            Sample(number, _image(path), vessels.astype(np.int64), fov, "vessel", str(path))
        )
    if not samples:
        raise DatasetNotFoundError(f"no DRIVE images under {base / 'images'}")
    return samples


def tile_index(root: Path) -> dict[str, str]:
    """Every magnetic-tile image as relative path -> category (Blowhole ... Uneven, Free)."""
    index = {}
    for category in (*TILE_CLASSES, TILE_FREE):
        for path in sorted((Path(root) / f"MT_{category}" / "Imgs").glob("*.jpg")):
            index[str(path.relative_to(root))] = category
    if not index:
        raise DatasetNotFoundError(f"no magnetic-tile images under {root}")
    return index


def stratified_split(
    index: dict[str, str], seed: int = 0, fractions: tuple[float, float] = (0.7, 0.15)
) -> dict[str, list[str]]:
    """Fixed-seed train/val/test split, stratified by category."""
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    rng = random.Random(seed)
    for category in sorted(set(index.values())):
        items = sorted(k for k, v in index.items() if v == category)
        rng.shuffle(items)
        n_train = round(len(items) * fractions[0])
        n_val = round(len(items) * fractions[1])
        split["train"] += items[:n_train]
        split["val"] += items[n_train : n_train + n_val]
        split["test"] += items[n_train + n_val :]
    return {k: sorted(v) for k, v in split.items()}


def tile_split(root: Path, split_file: Path, seed: int = 0) -> dict[str, list[str]]:
    """The recorded magnetic-tile split (created on first use, then read back unchanged)."""
    if split_file.is_file():
        return json.loads(split_file.read_text())["splits"]
    splits = stratified_split(tile_index(root), seed)
    split_file.parent.mkdir(parents=True, exist_ok=True)
    record = {"dataset": "magnetic-tile", "seed": seed, "stratified_by": "category"}
    split_file.write_text(json.dumps({**record, "splits": splits}, indent=1))
    return splits


def folder_split(
    names: list[str], split_file: Path, seed: int = 0, val_fraction: float = 0.15
) -> dict[str, list[str]]:
    """The recorded train/val split of a user's image+mask folder (created on first use)."""
    if split_file.is_file():
        return json.loads(split_file.read_text())["splits"]
    splits = stratified_split(dict.fromkeys(names, "all"), seed, (1 - val_fraction, val_fraction))
    splits["val"] += splits.pop("test")  # rounding leftovers
    split_file.parent.mkdir(parents=True, exist_ok=True)
    record = {"dataset": "folder", "seed": seed, "val_fraction": val_fraction}
    split_file.write_text(json.dumps({**record, "splits": splits}, indent=1))
    return splits


def load_tile(root: Path, relpaths: list[str], binary: bool = False) -> list[Sample]:
    """Magnetic-tile images (greyscale) with class-id masks (0 background, 1.. TILE_CLASSES),
    or with `binary` defect-vs-background masks (1 = any defect); `category` keeps the class."""
    samples = []
    for rel in relpaths:
        path = Path(root) / rel
        category = path.parent.parent.name.removeprefix("MT_")
        defect = _read(path.with_suffix(".png")) > 127
        class_id = TILE_CLASSES.index(category) + 1 if category in TILE_CLASSES else 0
        class_id = min(class_id, 1) if binary else class_id
        mask = defect.astype(np.int64) * class_id
        samples.append(Sample(rel, _image(path), mask, None, category, str(path)))
    return samples


def load_folder(images: Path, masks: Path, threshold: int = 127) -> list[Sample]:
    """Generic folder pair: each image has a same-stem mask; values > threshold are foreground."""
    samples = []
    for path in sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        found = [
            m for m in Path(masks).glob(f"{path.stem}.*") if m.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not found:
            continue
        mask = (_read(found[0]) > threshold).astype(np.int64)
        samples.append(
            Sample(
                path.stem,
                _image(path),
                mask[..., 0] if mask.ndim == 3 else mask,
                path=str(path),
            )
        )
    return samples
