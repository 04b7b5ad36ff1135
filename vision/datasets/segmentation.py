"""Segmentation data: DRIVE, magnetic-tile and generic image+mask folders, splits, preprocessing."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage

from vision.config import ModelConfig
from vision.io import read_image, to_uint8
from vision.preprocess import Preprocessor, convert_channels
from vision.types import PreprocessMeta

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
        raise FileNotFoundError(f"no DRIVE images under {base / 'images'}")
    return samples


def tile_index(root: Path) -> dict[str, str]:
    """Every magnetic-tile image as relative path -> category (Blowhole ... Uneven, Free)."""
    index = {}
    for category in (*TILE_CLASSES, TILE_FREE):
        for path in sorted((Path(root) / f"MT_{category}" / "Imgs").glob("*.jpg")):
            index[str(path.relative_to(root))] = category
    if not index:
        raise FileNotFoundError(f"no magnetic-tile images under {root}")
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


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map."""
    out = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return out.astype(np.int64)


def to_input_grid(labels: np.ndarray, meta: PreprocessMeta) -> np.ndarray:
    """A label map over the original image -> over the model input (same scale and padding as
    the image; nearest neighbour; padding is 0)."""
    out = np.zeros((meta.input_height, meta.input_width), np.int64)
    w = max(1, int(round(meta.original_width * meta.scale_x)))
    h = max(1, int(round(meta.original_height * meta.scale_y)))
    x0, y0 = int(round(meta.pad_x)), int(round(meta.pad_y))
    h, w = min(h, meta.input_height - y0), min(w, meta.input_width - x0)
    out[y0 : y0 + h, x0 : x0 + w] = resize_mask(labels, h, w)
    return out


def prepare(sample: Sample, config: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training view of a sample: CxHxW input (the serving Preprocessor, so training and serving
    match exactly), HxW labels and HxW FOV (the image's area, without letterbox padding), all
    at model input size (nearest for labels)."""
    x, meta = Preprocessor(config.input, config.preprocess)(sample.image)
    mask = to_input_grid(sample.mask, meta)
    fov = np.ones(sample.mask.shape, np.int64) if sample.fov is None else sample.fov
    return x, mask, to_input_grid(fov.astype(np.int64), meta) > 0


def channel_stats(samples: list[Sample], channel_order: str) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixel values scaled to [0, 1]."""
    pixels = (
        np.concatenate(
            [
                convert_channels(s.image, channel_order).reshape(
                    -1, 1 if channel_order == "GRAY" else 3
                )
                for s in samples
            ]
        ).astype(np.float64)
        / 255.0
    )
    return [round(float(v), 4) for v in pixels.mean(0)], [round(float(v), 4) for v in pixels.std(0)]
