"""Named training recipes: data, input geometry, architecture and schedule of each model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vision.paths import datasets_root


@dataclass(frozen=True)
class Recipe:
    """How one detector is trained, evaluated and served."""

    name: str
    format: str
    data: str  # absolute, or relative to the shared datasets root
    train_split: str = "train"
    val_split: str = "val"  # "" = hold `holdout` images out of the training split
    test_split: str = "test"
    holdout: int = 0
    channels: int = 3
    height: int = 416
    width: int = 416
    resize: str = "letterbox"
    train_mode: str = "letterbox"  # letterbox (with scale jitter) | crop (native-scale crops)
    crop: int = 320
    rotate: bool = False
    batch: int = 8
    epochs: int = 300
    minutes: float = 45.0
    lr: float = 2e-3
    widths: tuple[int, ...] = (32, 64, 128, 192)
    neck: int = 64
    strides: tuple[int, ...] = (8, 16, 32)
    score_threshold: float = 0.25
    iou_threshold: float = 0.5
    match_iou: float = 0.5  # IoU for the recipe's headline metric
    val_every: int = 1  # validate (and keep best.pt) every N epochs and after the last
    description: str = ""

    def data_path(self) -> Path:
        path = Path(self.data)
        return path if path.is_absolute() else datasets_root() / path

    @property
    def train_size(self) -> tuple[int, int]:
        return (self.crop, self.crop) if self.train_mode == "crop" else (self.height, self.width)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES = {
    "pcb-defects": Recipe(
        name="pcb-defects",
        format="deeppcb",
        data="deeppcb",
        train_split="trainval",
        val_split="",
        holdout=100,
        channels=1,
        height=640,
        width=640,
        train_mode="crop",
        crop=320,
        rotate=True,
        batch=8,
        match_iou=0.33,
        description="PCB defect detector (DeepPCB: open, short, mousebite, spur, copper, "
        "pin-hole) on binarised 640x640 board images, grey input at native scale.",
    ),
    "blood-cells": Recipe(
        name="blood-cells",
        format="voc",
        data="bccd/BCCD",
        channels=3,
        height=416,
        width=416,
        train_mode="letterbox",
        rotate=True,
        batch=8,
        description="Blood-cell detector (BCCD: RBC, WBC, Platelets) on 640x480 RGB smear "
        "images, letterboxed to 416x416.",
    ),
}


def from_args(args: object) -> Recipe:
    """A named recipe, or a generic one from --format/--data; CLI flags override fields."""
    name = getattr(args, "recipe", None)
    if name:
        if name not in RECIPES:
            raise SystemExit(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
        recipe = RECIPES[name]
    else:
        if not getattr(args, "format", None) or not getattr(args, "data", None):
            raise SystemExit("give --recipe NAME, or --format voc|coco|yolo|deeppcb and --data DIR")
        recipe = Recipe(
            name=getattr(args, "name", None) or "detector",
            format=args.format,
            data=str(Path(args.data).resolve()),
        )
    overrides = {
        key: getattr(args, key)
        for key in (
            "epochs",
            "minutes",
            "batch",
            "lr",
            "channels",
            "height",
            "width",
            "train_split",
            "val_split",
        )
        if getattr(args, key, None) is not None
    }
    if getattr(args, "size", None):
        overrides.update(height=args.size, width=args.size)
    return dataclasses.replace(recipe, **overrides)


def from_dict(data: dict) -> Recipe:
    fields = {f.name for f in dataclasses.fields(Recipe)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
    return Recipe(**values)
