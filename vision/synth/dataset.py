"""Synthetic datasets: real sources (instances, backgrounds, fits), generation, writers, sheet.

Sources come only from the training split (BCCD `train`, DeepPCB `trainval`, magnetic-tile the
seed-0 stratified `train` split), so synthetic images never carry evaluation-split content.
Outputs are in each dataset's own layout, so the existing readers load them unchanged.
"""

from __future__ import annotations

import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vision.datasets import detection, segmentation
from vision.datasets.images import load_image
from vision.datasets.provenance import Provenance, write_image
from vision.errors import ConfigError, DatasetNotFoundError
from vision.synth.copy_paste import (
    Box,
    Instance,
    PasteConfig,
    Placed,
    from_box,
    from_mask,
    paste_instance,
)
from vision.synth.distribution import ClassFit, fit_class, grey, largest_component
from vision.synth.procedural import ProceduralConfig, add_defect

TRAIN_SPLITS = {"magnetic-tile": "train", "bccd": "train", "deeppcb": "trainval"}
DATASETS = tuple(sorted(TRAIN_SPLITS))  # what `vision synth` generates for
GENERATORS = ("copy-paste", "procedural")


@dataclass
class Background:
    """A background image: dataset-relative path and the instances already on it."""

    path: Path
    rel: str
    boxes: list[tuple[str, Box]] = field(default_factory=list)


@dataclass
class Sources:
    """What generation draws from: rare-class instances, backgrounds, textures and fits."""

    dataset: str
    root: Path
    classes: tuple[str, ...]
    instances: dict[str, list[Instance]]
    backgrounds: list[Background]
    fits: dict[str, ClassFit]
    channels: int


@dataclass
class Synthetic:
    """One generated image with its exact labels (pasted) and the background's own boxes."""

    name: str
    image: np.ndarray
    placed: list[Placed]
    existing: list[tuple[str, Box]]
    provenance: Provenance


def read_pixels(path: Path, channels: int) -> np.ndarray:
    """HxWxC uint8 (C = 1 grey or 3 RGB), decoded by the server's decoder (`load_image`)."""
    return load_image(path, channels)


def _rel(path: Path, root: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(root).resolve()))


def _subset(items: list, limit: int, seed: int) -> list:
    if limit <= 0 or len(items) <= limit:
        return list(items)
    return random.Random(seed).sample(items, limit)


def _tile_sources(root: Path, classes: tuple[str, ...], split: str, limit: int, seed: int):
    rels = segmentation.stratified_split(segmentation.tile_index(root), seed=0)[split]
    by_class: dict[str, list[Instance]] = {c: [] for c in classes}
    wanted = [r for r in rels if Path(r).parent.parent.name.removeprefix("MT_") in classes]
    for sample in segmentation.load_tile(root, _subset(wanted, limit, seed)):
        by_class[sample.category] += from_mask(
            sample.image, sample.mask > 0, sample.category, sample.name
        )
    free = [r for r in rels if r.startswith(f"MT_{segmentation.TILE_FREE}/")]
    return by_class, [Background(root / r, r) for r in _subset(free, limit, seed)], 1


def _voc_box(box: np.ndarray, h: int, w: int) -> Box:
    """VOC 1-based inclusive corners -> pixel edges, clipped to the image."""
    x1, y1 = max(int(round(box[0])) - 1, 0), max(int(round(box[1])) - 1, 0)
    return x1, y1, min(int(round(box[2])), w), min(int(round(box[3])), h)


def _bccd_sources(root: Path, classes, split: str, limit: int, seed: int, method: str):
    samples, names = detection.load_voc(root, split)
    by_class: dict[str, list[Instance]] = {c: [] for c in classes}
    backgrounds = []
    for s in _subset(samples, limit, seed):
        image = read_pixels(s.image, 3)
        h, w = image.shape[:2]
        boxes = [(names[c], _voc_box(b, h, w)) for b, c in zip(s.boxes, s.labels, strict=True)]
        rel = _rel(s.image, root)
        backgrounds.append(Background(s.image, rel, boxes))
        for i, (name, box) in enumerate(boxes):
            if name in by_class and box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
                by_class[name].append(from_box(image, box, name, rel, i, method))
    return by_class, backgrounds, 3


def _pcb_sources(root: Path, classes, split: str, limit: int, seed: int):
    samples, _ = detection.load_deeppcb(root, split)
    by_class: dict[str, list[Instance]] = {c: [] for c in classes}
    backgrounds = []
    for s in _subset(samples, limit, seed):
        template = s.image.with_name(s.image.name.replace("_test", "_temp"))
        backgrounds.append(Background(template, _rel(template, root)))
        if not any(detection.DEEPPCB_CLASSES[c] in by_class for c in s.labels):
            continue
        image, temp = read_pixels(s.image, 1), read_pixels(template, 1)
        for i, (b, c) in enumerate(zip(s.boxes, s.labels, strict=True)):
            name = detection.DEEPPCB_CLASSES[c]
            if name in by_class:
                box = tuple(int(round(v)) for v in b)
                by_class[name].append(
                    from_box(image, box, name, _rel(s.image, root), i, "template", temp)
                )
    return by_class, backgrounds, 1


def load_sources(
    dataset: str,
    root: Path,
    classes: tuple[str, ...],
    split: str = "",
    limit: int = 300,
    seed: int = 0,
    foreground: str = "grabcut",
) -> Sources:
    """Instances of `classes`, backgrounds and per-class fits from a dataset's training split;
    at most `limit` source images (a seeded sample; 0 = all)."""
    split = split or TRAIN_SPLITS[dataset]
    root = Path(root)
    if dataset == "magnetic-tile":
        by_class, backgrounds, channels = _tile_sources(root, classes, split, limit, seed)
    elif dataset == "bccd":
        by_class, backgrounds, channels = _bccd_sources(
            root, classes, split, limit, seed, foreground
        )
    elif dataset == "deeppcb":
        by_class, backgrounds, channels = _pcb_sources(root, classes, split, limit, seed)
    else:
        raise ConfigError(f"unknown dataset {dataset!r}: {' | '.join(DATASETS)}")
    missing = [c for c in classes if not by_class.get(c)]
    if missing:
        raise DatasetNotFoundError(
            f"no real instances of {missing} in {dataset} {split} under {root}"
        )
    if not backgrounds:
        raise DatasetNotFoundError(f"no background images in {dataset} {split} under {root}")
    fits = {c: fit_class(c, [i.stats for i in by_class[c]]) for c in classes}
    return Sources(dataset, root, classes, by_class, backgrounds, fits, channels)


def tile_region(image: np.ndarray, erode: int = 4) -> np.ndarray:
    """The lit tile surface of a magnetic-tile image: not dark, largest component, eroded."""
    g = cv2.GaussianBlur(grey(image), (0, 0), 5)
    lit = g > 0.5 * float(np.median(g))
    return cv2.erode(
        largest_component(lit).astype(np.uint8),
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1)),
    ).astype(bool)


def paste_config(dataset: str, blend: str = "") -> PasteConfig:
    """Per-dataset copy-paste defaults (DeepPCB is binary: hard alpha, no intensity change)."""
    if dataset == "deeppcb":
        return PasteConfig(
            blend=blend or "alpha",
            gain=(1.0, 1.0),
            match_background=False,
            min_visible=0.5,
            min_context=0.8,
            binary=True,
            right_angles=True,
            tries=400,
            boxes=True,
        )
    if dataset == "bccd":  # crowded slides: more tries to find a free spot
        return PasteConfig(blend=blend or "poisson", boxes=True, tries=200)
    return PasteConfig(blend=blend or "poisson")


def _occupied(shape: tuple[int, ...], boxes: list[tuple[str, Box]]) -> np.ndarray:
    occupied = np.zeros(shape[:2], bool)
    for _, (x1, y1, x2, y2) in boxes:
        occupied[y1:y2, x1:x2] = True
    return occupied


def _place(src: Sources, generator: str, cls: str, image, occupied, allowed, rng, cfg, bg):
    fit = src.fits.get(cls) if cfg.get("fit", True) else None
    if generator == "copy-paste":
        inst = src.instances[cls][int(rng.integers(len(src.instances[cls])))]
        return paste_instance(image, occupied, allowed, inst, cfg["paste"], rng, fit)
    others = [b for b in src.backgrounds if b.rel != bg.rel] or src.backgrounds
    tex_bg = others[int(rng.integers(len(others)))]
    texture = (tex_bg.rel, read_pixels(tex_bg.path, src.channels))
    return add_defect(image, occupied, allowed, cls, texture, cfg["procedural"], rng, fit)


def generate_one(
    src: Sources,
    generator: str,
    index: int,
    seed: int,
    per_image: int = 1,
    cls: str | None = None,
    **options,
) -> Synthetic | None:
    """Synthetic image `index`: class `cls` (default classes[index % n]);
    rng = default_rng([seed, index])."""
    rng = np.random.default_rng([seed, index])
    cls = cls or src.classes[index % len(src.classes)]
    cfg = {"fit": True, "paste": paste_config(src.dataset), "procedural": ProceduralConfig()}
    cfg.update(options)
    for _attempt in range(5):
        bg = src.backgrounds[int(rng.integers(len(src.backgrounds)))]
        image = read_pixels(bg.path, src.channels)
        occupied = _occupied(image.shape, bg.boxes)
        allowed = tile_region(image) if src.dataset == "magnetic-tile" else None
        placed = []
        for _ in range(int(rng.integers(1, per_image + 1))):
            item = _place(src, generator, cls, image, occupied, allowed, rng, cfg, bg)
            if item is not None:
                placed.append(item)
        if placed:
            return Synthetic(
                f"synth_{index:06d}",
                image,
                placed,
                bg.boxes,
                _provenance(src, generator, seed, index, bg, placed, bool(cfg["fit"])),
            )
    return None


def _provenance(src, generator, seed, index, bg, placed, fitted) -> Provenance:
    params = {
        "index": index,
        "class": placed[0].class_name,
        "rng": f"numpy default_rng([{seed}, {index}])",
        "fitted_distribution": fitted,
        "instances": [{"class": p.class_name, "box": list(p.box), **p.params} for p in placed],
    }
    sources = [{"path": bg.rel, "instance": None, "role": "background"}]
    sources += [{**s, "target": k} for k, p in enumerate(placed) for s in p.sources]
    return Provenance(generator, params, sources, seed, dataset=src.dataset)


def generate(src: Sources, generator: str, count: int, seed: int, **options) -> Iterator:
    """Yield `count` attempts: a Synthetic, or None where nothing could be placed."""
    for index in range(count):
        yield generate_one(src, generator, index, seed, **options)


def _voc_xml(name: str, filename: str, shape, objects: list[tuple[str, Box]]) -> str:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "BCCD"
    ET.SubElement(ann, "filename").text = filename
    size = ET.SubElement(ann, "size")
    for key, value in zip(
        ("width", "height", "depth"), (shape[1], shape[0], shape[2]), strict=True
    ):
        ET.SubElement(size, key).text = str(value)
    for cls, (x1, y1, x2, y2) in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = cls
        for key in ("pose", "truncated", "difficult"):
            ET.SubElement(obj, key).text = "Unspecified" if key == "pose" else "0"
        box = ET.SubElement(obj, "bndbox")
        for key, value in zip(
            ("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2), strict=True
        ):
            ET.SubElement(box, key).text = str(value)
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode") + "\n"


def write_synthetic(
    out: Path, dataset: str, item: Synthetic, background: Path | None = None
) -> Path:
    """Write one item in the dataset's own layout; returns the image path."""
    out = Path(out)
    pasted = [(p.class_name, p.box) for p in item.placed]
    if dataset == "bccd":
        image = write_image(
            out / "BCCD" / "JPEGImages" / f"{item.name}.png", item.image, item.provenance
        )
        xml = _voc_xml(item.name, image.name, item.image.shape, item.existing + pasted)
        (out / "BCCD" / "Annotations").mkdir(parents=True, exist_ok=True)
        (out / "BCCD" / "Annotations" / f"{item.name}.xml").write_text(xml)
        return image
    if dataset == "deeppcb":
        folder = out / "PCBData" / "groupsynth"
        image = write_image(folder / "synth" / f"{item.name}_test.png", item.image, item.provenance)
        if background is not None:
            write_image(
                folder / "synth" / f"{item.name}_temp.png",
                read_pixels(background, 1),
                item.provenance,
            )
        lines = [
            f"{x1} {y1} {x2} {y2} {detection.DEEPPCB_CLASSES.index(c) + 1}"
            for c, (x1, y1, x2, y2) in pasted
        ]
        (folder / "synth_not").mkdir(parents=True, exist_ok=True)
        (folder / "synth_not" / f"{item.name}.txt").write_text("\n".join(lines) + "\n")
        return image
    folder = out / f"MT_{item.placed[0].class_name}" / "Imgs"
    image = write_image(folder / f"{item.name}.jpg", item.image, item.provenance)
    mask = np.any([p.mask for p in item.placed], axis=0).astype(np.uint8) * 255
    write_image(folder / f"{item.name}.png", mask, item.provenance)
    return image


@dataclass
class Written:
    """What `write_all` wrote: image names, attempts that placed nothing, kept samples, time."""

    names: list[str]
    failed: int
    samples: list[Synthetic]
    seconds: float


def write_all(
    out: Path, src: Sources, stream: Iterator, total: int, keep_samples: int = 0
) -> Written:
    """Write every generated item of `stream` in the dataset's layout (progress bar), then the
    split lists; keeps the first `keep_samples` items (for a contact sheet)."""
    from tqdm import tqdm

    names, samples, failed, start = [], [], 0, time.perf_counter()
    for item in tqdm(stream, total=total, desc=f"synth {src.dataset}", unit="img"):
        if item is None:
            failed += 1
            continue
        bg = next(b.path for b in src.backgrounds if b.rel == item.provenance.sources[0]["path"])
        write_synthetic(out, src.dataset, item, bg)
        names.append(item.name)
        if len(samples) < keep_samples:
            samples.append(item)
    seconds = time.perf_counter() - start
    write_split_lists(out, src.dataset, names)
    return Written(names, failed, samples, seconds)


def write_split_lists(out: Path, dataset: str, names: list[str]) -> None:
    """The list files the dataset readers expect (VOC ImageSets, DeepPCB split txt)."""
    if dataset == "bccd":
        path = Path(out) / "BCCD" / "ImageSets" / "Main" / "synth.txt"
        lines = names
    elif dataset == "deeppcb":
        path = Path(out) / "PCBData" / "synth.txt"
        lines = [f"groupsynth/synth/{n}.png groupsynth/synth_not/{n}.txt" for n in names]
    else:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def contact_sheet(
    items: list[Synthetic], classes: tuple[str, ...], path: Path, cols: int = 4, cell: int = 256
) -> Path:
    """A grid of samples with their labels drawn (pasted ones prefixed 'synth')."""
    from vision.render import draw_overlay
    from vision.types import ClassMask, Detection, DetectionResult, Image, SegmentationResult

    ids = {c: i for i, c in enumerate(classes)}
    tiles = []
    for item in items:
        if item.provenance.dataset != "magnetic-tile":
            dets = [
                Detection(*map(float, b), 1.0, ids.get(c, len(classes)), c)
                for c, b in item.existing
            ]
            dets += [
                Detection(*map(float, p.box), 1.0, ids[p.class_name], f"synth {p.class_name}")
                for p in item.placed
            ]
            rgb = draw_overlay(Image(item.image), DetectionResult(dets))
        else:
            masks = [
                ClassMask(ids[p.class_name], f"synth {p.class_name}", p.mask, 1.0)
                for p in item.placed
            ]
            rgb = draw_overlay(Image(item.image), SegmentationResult(masks), alpha=0.3)
        tiles.append(_fit_cell(rgb, cell))
    while len(tiles) % cols:
        tiles.append(np.zeros((cell, cell, 3), np.uint8))
    rows = [np.concatenate(tiles[i : i + cols], 1) for i in range(0, len(tiles), cols)]
    sheet = np.concatenate(rows, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def _fit_cell(rgb: np.ndarray, cell: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = cell / max(h, w)
    small = cv2.resize(rgb, (max(int(w * s), 1), max(int(h * s), 1)), interpolation=cv2.INTER_AREA)
    out = np.zeros((cell, cell, 3), np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    return out
