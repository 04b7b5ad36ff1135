"""The real-vs-synthetic detector's workflow: image sets, train, re-evaluate a saved detector,
export + threshold + held-out report, and checking images (torch-free).

Functions take explicit options (`DataOptions`); `vision.synth_detect.cli` parses the command
line into them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vision.datasets.locations import dataset_dir
from vision.datasets.provenance import read_provenance
from vision.errors import InvalidInputError
from vision.synth_detect.detector import (
    CANON_QUALITY,
    Detector,
    Item,
    folder_items,
    tile_real_items,
)
from vision.synth_detect.train import TrainConfig


@dataclass
class DataOptions:
    """The image sets and outputs shared by `train` and `evaluate` (see `vision synth-detect`)."""

    synthetic: list[str]
    test_synthetic: list[str]
    out: Path
    val_synthetic: list[str] = field(default_factory=list)
    holdout: list[str] = field(default_factory=list)
    data: str | None = None  # magnetic-tile root (default: the shared datasets)
    real_train: list[str] = field(default_factory=list)
    real_test: list[str] = field(default_factory=list)
    real_val: list[str] = field(default_factory=list)
    threads: int = 1
    threshold: float = 0.5  # used without val_synthetic
    record: dict = field(default_factory=dict)  # the parsed command line, for the report


def _real(a: DataOptions) -> tuple[list[Item], list[Item], list[Item]]:
    """Real train, test and validation images (tile splits, or the given folders)."""
    if a.real_train or a.real_test:
        return folder_items(a.real_train), folder_items(a.real_test), folder_items(a.real_val)
    root = dataset_dir("magnetic-tile", a.data)
    return tuple(tile_real_items(root, s) for s in ("train", "test", "val"))


def _synthetic(folders: list[str]) -> list[Item]:
    return [it for it in folder_items([Path(f) for f in folders]) if it.synthetic]


def source_leaks(train: list[Item], test: list[Item]) -> int:
    """Synthetic training images built from (by file name) a real test image or vice versa."""
    real_test = {it.path.name for it in test if not it.synthetic}
    real_train = {it.path.name for it in train if not it.synthetic}
    leaks = 0
    for it, banned in [(i, real_test) for i in train] + [(i, real_train) for i in test]:
        prov = read_provenance(it.path) if it.synthetic else None
        if prov and banned & {Path(s["path"]).name for s in prov.sources}:
            leaks += 1
    return leaks


@dataclass
class ImageSets:
    """Training, threshold-setting and test images, and the generators trained on."""

    train: list[Item]
    test: list[Item]
    real_val: list[Item]
    synth_val: list[Item]
    seen: list[str]


def image_sets(a: DataOptions) -> ImageSets:
    """Real and synthetic train / test / validation images; refuses an image in both."""
    real_train, real_test, real_val = _real(a)
    synth_train = [it for it in _synthetic(a.synthetic) if it.group not in set(a.holdout)]
    train_items, test_items = real_train + synth_train, real_test + _synthetic(a.test_synthetic)
    overlap = {it.path.resolve() for it in train_items} & {it.path.resolve() for it in test_items}
    if overlap:
        raise InvalidInputError(
            f"{len(overlap)} image(s) both in training and test, e.g. {overlap.pop()}"
        )
    seen = sorted({it.group for it in synth_train})
    return ImageSets(train_items, test_items, real_val, _synthetic(a.val_synthetic), seen)


def train_detector(a: DataOptions, cfg: TrainConfig) -> int:
    """Train, save `detector.pt`, then export and evaluate it (`export_and_evaluate`)."""
    import torch

    from vision.synth_detect.train import train

    images = image_sets(a)
    model, summary = train(images.train, cfg, log=lambda m: print(m, flush=True))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": model.state_dict(), "config": asdict(cfg), "summary": summary}
    torch.save({**checkpoint, "generators": images.seen}, out / "detector.pt")
    return export_and_evaluate(model, cfg, summary, images, a)


def evaluate_detector(detector: Path | str, a: DataOptions) -> int:
    """Load a trained `detector.pt` (or its folder), then export and evaluate it like
    `train_detector` does."""
    import torch

    from vision.synth_detect.train import build_model

    path = Path(detector)
    checkpoint = torch.load(path / "detector.pt" if path.is_dir() else path, weights_only=True)
    cfg = TrainConfig(**checkpoint["config"])
    model = build_model(cfg.width, cfg.context)
    model.load_state_dict(checkpoint["state_dict"])
    images = image_sets(a)
    images.seen = checkpoint.get("generators", images.seen)
    summary = {**asdict(cfg), **checkpoint.get("summary", {})}  # older files: config only
    return export_and_evaluate(model.eval(), cfg, summary, images, a)


def export_and_evaluate(
    model, cfg: TrainConfig, summary: dict, images: ImageSets, a: DataOptions
) -> int:
    """Export `detector.onnx`, set its threshold on the validation images, score the test
    images, write `report.json` and `report.png`."""
    from vision.synth_detect.report import calibrate, metrics, score, write_report
    from vision.synth_detect.train import export_onnx, set_metadata

    out, seen = Path(a.out), images.seen
    meta = {"canonical_jpeg_quality": CANON_QUALITY, "trained_on": ",".join(seen)}
    onnx_path = export_onnx(model, out / "detector.onnx", meta, vertical=cfg.augment)
    detector = Detector(onnx_path, a.threads)
    threshold = a.threshold
    if images.synth_val and images.real_val:
        val = score(detector, images.real_val + [i for i in images.synth_val if i.group in seen])
        synth_scores = np.concatenate([v for k, v in val.items() if k in seen])
        threshold = calibrate(val["real"], synth_scores)
        print(f"threshold {threshold:.4f} (best balanced accuracy on the validation images)")
    set_metadata(onnx_path, {"threshold": threshold})
    scores = score(detector, images.test)
    report = metrics(scores, threshold, set(seen))
    real_test = [it for it in images.test if not it.synthetic]
    report["validation_images"] = {"real": len(images.real_val), "synthetic": len(images.synth_val)}
    report["training"] = {**summary, "generators": seen, "holdout": list(a.holdout)}
    report["test_images"] = {"real": len(real_test), "synthetic": len(images.test) - len(real_test)}
    report["source_leaks"] = source_leaks(images.train, images.test)
    report["argv"] = dict(a.record)
    write_report(report, scores, out)
    for name, g in report["generators"].items():
        tag = "seen" if g["seen_in_training"] else "UNSEEN"
        print(f"{name:<22} {tag:<6} balanced acc {g['balanced_accuracy']:.3f}  AUC {g['auc']:.3f}")
    print(f"real kept real {report['real']['accuracy']:.3f}, control {report['control']}")
    print(f"wrote {onnx_path}, {out / 'report.json'}, {out / 'report.png'}")
    return 0


def check_images(
    images: list[Path], detector: Path | str, threshold: float | None = None
) -> list[tuple[Path, float, bool]]:
    """(image, P(synthetic), flagged) per image, with the detector's own threshold unless
    `threshold` is given (torch-free)."""
    path = Path(detector)
    model = Detector(path / "detector.onnx" if path.is_dir() else path)
    limit = model.threshold if threshold is None else threshold
    return [(image, p, p >= limit) for image, p in model.check(images)]
