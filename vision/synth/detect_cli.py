"""`vision synth-detect`: train a real-vs-synthetic detector, or check images with one.

    vision synth-detect train --synthetic DIR... --test-synthetic DIR... --out DIR
        [--holdout GENERATOR...] [--data TILE_ROOT | --real-train DIR... --real-test DIR...]
    vision synth-detect evaluate --detector DIR/detector.pt (the train image options) --out DIR
    vision synth-detect check IMAGE... --detector DIR/detector.onnx

`check` is torch-free (onnxruntime).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vision.synth.detector import CANON_QUALITY, Detector, Item, folder_items, tile_real_items
from vision.synth.detector_train import TrainConfig
from vision.synth.provenance import read_provenance


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision synth-detect", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, export ONNX, evaluate on held-out images")
    _data_arguments(t)
    t.add_argument("--steps", type=int, default=TrainConfig.steps)
    t.add_argument("--batch", type=int, default=TrainConfig.batch)
    t.add_argument("--crop", type=int, default=TrainConfig.crop)
    t.add_argument("--width", type=int, default=TrainConfig.width)
    t.add_argument("--mine", type=int, default=TrainConfig.mine, help="hard-negative candidates")
    t.add_argument("--background", type=float, default=TrainConfig.background)
    t.add_argument("--no-augment", action="store_true", help="no top-bottom flip, gain, offset")
    t.add_argument("--no-context", action="store_true", help="63 px receptive field, no context")
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("evaluate", help="re-export a trained detector.pt and evaluate it")
    _data_arguments(e)
    e.add_argument("--detector", required=True, help="detector.pt from `train` (or its folder)")
    c = sub.add_parser("check", help="print P(synthetic) per image")
    c.add_argument("images", nargs="+")
    c.add_argument("--detector", required=True, help="detector.onnx (or its folder)")
    c.add_argument("--threshold", type=float, help="default: the detector's own")
    return p


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """The image sets and outputs shared by `train` and `evaluate`."""
    p.add_argument("--synthetic", nargs="+", required=True, help="training `vision synth` dirs")
    p.add_argument("--test-synthetic", nargs="+", required=True, help="held-out synth dirs")
    p.add_argument("--val-synthetic", nargs="*", default=[], help="dirs to set the threshold")
    p.add_argument("--holdout", nargs="*", default=[], help="generators kept out of training")
    p.add_argument("--data", help="magnetic-tile root (default: the shared datasets)")
    p.add_argument("--real-train", nargs="*", default=[], help="real image dirs (not tiles)")
    p.add_argument("--real-test", nargs="*", default=[], help="real held-out image dirs")
    p.add_argument("--real-val", nargs="*", default=[], help="real threshold-setting dirs")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.5, help="used without --val-synthetic")


def _real(a: argparse.Namespace) -> tuple[list[Item], list[Item], list[Item]]:
    """Real train, test and validation images (tile splits, or the given folders)."""
    if a.real_train or a.real_test:
        return folder_items(a.real_train), folder_items(a.real_test), folder_items(a.real_val)
    from vision.paths import datasets_root

    root = Path(a.data) if a.data else datasets_root() / "magnetic-tile"
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


def _image_sets(a: argparse.Namespace) -> ImageSets:
    real_train, real_test, real_val = _real(a)
    synth_train = [it for it in _synthetic(a.synthetic) if it.group not in set(a.holdout)]
    train_items, test_items = real_train + synth_train, real_test + _synthetic(a.test_synthetic)
    overlap = {it.path.resolve() for it in train_items} & {it.path.resolve() for it in test_items}
    if overlap:
        raise SystemExit(f"{len(overlap)} image(s) both in training and test, e.g. {overlap.pop()}")
    seen = sorted({it.group for it in synth_train})
    return ImageSets(train_items, test_items, real_val, _synthetic(a.val_synthetic), seen)


def train_command(a: argparse.Namespace) -> int:
    """Train, save `detector.pt`, then export and evaluate it (`_export_and_evaluate`)."""
    import torch

    from vision.synth.detector_train import train

    images = _image_sets(a)
    cfg = TrainConfig(
        a.steps,
        a.batch,
        a.crop,
        seed=a.seed,
        threads=a.threads,
        background=a.background,
        context=not a.no_context,
        width=a.width,
        mine=a.mine,
        augment=not a.no_augment,
    )
    model, summary = train(images.train, cfg, log=lambda m: print(m, flush=True))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": model.state_dict(), "config": asdict(cfg), "summary": summary}
    torch.save({**checkpoint, "generators": images.seen}, out / "detector.pt")
    return _export_and_evaluate(model, cfg, summary, images, a)


def evaluate_command(a: argparse.Namespace) -> int:
    """Load a trained `detector.pt`, then export and evaluate it like `train` does."""
    import torch

    from vision.synth.detector_train import build_model

    path = Path(a.detector)
    checkpoint = torch.load(path / "detector.pt" if path.is_dir() else path, weights_only=True)
    cfg = TrainConfig(**checkpoint["config"])
    model = build_model(cfg.width, cfg.context)
    model.load_state_dict(checkpoint["state_dict"])
    images = _image_sets(a)
    images.seen = checkpoint.get("generators", images.seen)
    summary = {**asdict(cfg), **checkpoint.get("summary", {})}  # older files: config only
    return _export_and_evaluate(model.eval(), cfg, summary, images, a)


def _export_and_evaluate(
    model, cfg: TrainConfig, summary: dict, images: ImageSets, a: argparse.Namespace
) -> int:
    """Export `detector.onnx`, set its threshold on the validation images, score the test
    images, write `report.json` and `report.png`."""
    from vision.synth.detector_report import calibrate, metrics, score, write_report
    from vision.synth.detector_train import export_onnx, set_metadata

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
    report["argv"] = vars(a)
    write_report(report, scores, out)
    for name, g in report["generators"].items():
        tag = "seen" if g["seen_in_training"] else "UNSEEN"
        print(f"{name:<22} {tag:<6} balanced acc {g['balanced_accuracy']:.3f}  AUC {g['auc']:.3f}")
    print(f"real kept real {report['real']['accuracy']:.3f}, control {report['control']}")
    print(f"wrote {onnx_path}, {out / 'report.json'}, {out / 'report.png'}")
    return 0


def check_command(a: argparse.Namespace) -> int:
    """Print `path  P(synthetic)  verdict` per image."""
    path = Path(a.detector)
    detector = Detector(path / "detector.onnx" if path.is_dir() else path)
    threshold = detector.threshold if a.threshold is None else a.threshold
    for image, p in detector.check([Path(i) for i in a.images]):
        print(f"{image}\t{p:.4f}\t{'synthetic' if p >= threshold else 'real'}")
    return 0


def synth_detect(argv: list[str]) -> int:
    """Run `vision synth-detect` with its own arguments; returns an exit code."""
    a = _parser().parse_args(argv)
    commands = {"train": train_command, "evaluate": evaluate_command, "check": check_command}
    return commands[a.command](a)


if __name__ == "__main__":
    import sys

    raise SystemExit(synth_detect(sys.argv[1:]))
