"""Named training recipes: data, input geometry, architecture and schedule of each model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vision.errors import ConfigError
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
        """The dataset folder: `data` itself if absolute, else under the datasets root."""
        path = Path(self.data)
        return path if path.is_absolute() else datasets_root() / path

    @property
    def train_size(self) -> tuple[int, int]:
        """Training input (height, width): the crop size in crop mode, else the model input size."""
        return (self.crop, self.crop) if self.train_mode == "crop" else (self.height, self.width)

    def to_dict(self) -> dict:
        """The recipe as a plain dict."""
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


OVERRIDABLE = (
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


def resolve_recipe(
    recipe: str | None = None,
    fmt: str | None = None,
    data: str | Path | None = None,
    name: str | None = None,
    size: int | None = None,
    **overrides: object,
) -> Recipe:
    """A named recipe, or a generic one from `fmt` and `data`; `overrides` (fields of
    `OVERRIDABLE`, None = keep) and `size` (square input) replace the recipe's fields.
    ConfigError names the fix when neither is given or the name is unknown."""
    if recipe:
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
        chosen = RECIPES[recipe]
    elif fmt and data:
        chosen = Recipe(name=name or "detector", format=fmt, data=str(Path(data).resolve()))
    else:
        raise ConfigError("give --recipe NAME, or --format voc|coco|yolo|deeppcb and --data DIR")
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise ConfigError(f"recipe fields {sorted(unknown)} cannot be overridden")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if size:
        changes.update(height=size, width=size)
    return dataclasses.replace(chosen, **changes)


def from_dict(data: dict) -> Recipe:
    """A recipe from its `to_dict` form (lists become tuples; unknown keys are dropped)."""
    fields = {f.name for f in dataclasses.fields(Recipe)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
    return Recipe(**values)
