"""The paired synthetic-data experiment: definitions, data views and synthesis.

Each experiment trains the same small network for the same number of steps with the same seeds
twice, without and with synthetic rare-class images mixed into every batch, and scores both on
real held-out images only (`vision.synth_eval.arms`, `vision.synth_eval.runner`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from vision.synth.dataset import (
    Sources,
    generate,
    load_sources,
    paste_config,
    write_all,
)
from vision.synth.distribution import fit_class


@dataclass(frozen=True)
class Experiment:
    """One paired experiment: task, rare classes, the small-budget recipe and the synthesis."""

    name: str
    task: str  # segmentation | detection
    dataset: str  # magnetic-tile | bccd | deeppcb
    recipe: str
    rare: tuple[str, ...]
    overrides: dict = field(default_factory=dict)
    synth_count: int = 200
    per_image: int = 1
    foreground: str = "grabcut"
    max_sources: int = 0
    keep_fraction: float = 1.0  # share of rare[0]'s training boxes kept (deeppcb)
    train_images: int = 0  # detection: only the first N training images (and synthesis from them)
    test_limit: int = 0  # 0: every test image
    val_limit: int = 20  # images for the per-epoch validation (monitoring only)
    metric: str = ""


TILE = Experiment(
    name="tile-fray-crack",
    task="segmentation",
    dataset="magnetic-tile",
    recipe="tile-defects",
    rare=("Fray", "Crack"),
    overrides={
        "labels": ("background", "defect"),
        "height": 192,
        "width": 192,
        "crop": 96,
        "channels": (8, 16, 32, 64),
        "res_units": 1,
        "loss": "ce_fgdice",
        "batch_size": 8,
        "steps_per_epoch": 100,
        "epochs": 5,
        "extra": {
            "split_seed": 0,
            "free_per_epoch": 1.0,
            "fg_center": 0.5,
            # the bundled model's image score: a logistic regression on pooled encoder features
            # (bottleneck and 1/8 scale), fitted on the real training images; each arm's masks
            # are gated on it at its own operating point (`arms.operating_gate`)
            "image_head": {
                "layers": [
                    "model.1.submodule.1.submodule.1.submodule",
                    "model.1.submodule.1.submodule.0",
                ],
                "C": 0.1,
            },
        },
    },
    synth_count=200,
    per_image=2,
    metric="defect Dice (pooled pixels) on the class's real test images, at 192x192",
)
# The same experiment with the synthetic images in place of real defect images only: the
# 5,000-step run of TILE raised the defect-free false-positive rate at the gate (8.6 -> 13.7 %)
# while each batch's defect-free share fell from 1/2 to 3/8; here it stays 1/2 in both arms.
TILE_KEEP_PRIOR = dataclasses.replace(
    TILE,
    name="tile-fray-crack-keep-prior",
    overrides={
        **TILE.overrides,
        "extra": {**TILE.overrides["extra"], "synthetic_replaces": "defect"},
    },
)
BCCD = Experiment(
    name="bccd-platelets-wbc",
    task="detection",
    dataset="bccd",
    recipe="blood-cells",
    rare=("Platelets", "WBC"),
    overrides={
        "height": 224,
        "width": 224,
        "widths": (16, 32, 64, 96),
        "neck": 32,
        "batch": 8,
        "epochs": 6,
    },
    synth_count=150,
    foreground="otsu",
    max_sources=0,
    metric="VOC AP@0.5 per class on the real test split, at 224x224 letterbox",
)
BCCD_416 = dataclasses.replace(
    BCCD,
    name="bccd-platelets-wbc-416",
    overrides={**BCCD.overrides, "height": 416, "width": 416, "epochs": 20},
    metric="VOC AP@0.5 per class on the real test split, at 416x416 letterbox",
)
BCCD_FEW = dataclasses.replace(
    BCCD_416,
    name="bccd-platelets-wbc-30img",
    train_images=30,
    overrides={**BCCD_416.overrides, "epochs": 130, "val_every": 10},  # 520 steps, as at 416
    metric="VOC AP@0.5 per class on the real test split, at 416x416 letterbox; trained on the "
    "first 30 training images only (synthesis from their instances and slides only)",
)
PCB = Experiment(
    name="deeppcb-spur-5pct",
    task="detection",
    dataset="deeppcb",
    recipe="pcb-defects",
    rare=("spur",),
    overrides={
        "crop": 128,
        "widths": (16, 32, 64, 96),
        "neck": 32,
        "batch": 8,
        "epochs": 2,
    },
    synth_count=300,
    per_image=2,
    keep_fraction=0.05,
    test_limit=120,
    metric="AP (IoU > 0.33, DeepPCB protocol) of the class on real test images, native 640x640",
)
PCB_320 = dataclasses.replace(
    PCB,
    name="deeppcb-spur-5pct-320",
    # the bundled pcb-defects network and crops (val mAP 0.64 after 448 steps with every box)
    overrides={
        "crop": 320,
        "widths": (32, 64, 128, 192),
        "neck": 64,
        "batch": 8,
        "epochs": 4,
        "val_every": 4,
    },
)
EXPERIMENTS = {e.name: e for e in (TILE, TILE_KEEP_PRIOR, BCCD, BCCD_416, BCCD_FEW, PCB, PCB_320)}


def restrict(src: Sources, keep_images: set[str]) -> Sources:
    """Sources limited to instances and backgrounds of the given (dataset-relative) images."""
    for cls in src.classes:
        src.instances[cls] = [i for i in src.instances[cls] if i.source in keep_images]
        if not src.instances[cls]:
            raise ValueError(f"no {cls} instances left in the kept training images")
        src.fits[cls] = fit_class(cls, [i.stats for i in src.instances[cls]])
    test_of = {b.rel: b.rel.replace("_temp", "_test") for b in src.backgrounds}
    src.backgrounds = [b for b in src.backgrounds if test_of[b.rel] in keep_images]
    return src


def synthesize(exp: Experiment, root: Path, out: Path, seed: int = 0, keep=None) -> dict:
    """Write `exp.synth_count` copy-paste images of the rare classes from the training split
    (optionally only from `keep` images) into `out`; reuses an existing complete folder."""
    summary_path = Path(out) / "synth.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    t0 = time.perf_counter()
    src = load_sources(exp.dataset, root, exp.rare, "", exp.max_sources, seed, exp.foreground)
    if keep is not None:
        src = restrict(src, keep)
    loaded = time.perf_counter() - t0
    stream = generate(
        src,
        "copy-paste",
        exp.synth_count,
        seed,
        per_image=exp.per_image,
        paste=paste_config(exp.dataset),
    )
    written = write_all(out, src, stream, exp.synth_count)
    names, failed, seconds = written.names, written.failed, written.seconds
    summary = {
        "written": len(names),
        "failed": failed,
        "source_instances": {c: len(v) for c, v in src.instances.items()},
        "source_seconds": round(loaded, 1),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(names) / max(seconds, 1e-9), 2),
    }
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary
