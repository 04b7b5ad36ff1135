"""`vision synth-detect`: train a real-vs-synthetic detector, or check images with one.

    vision synth-detect train --synthetic DIR... --test-synthetic DIR... --out DIR
        [--holdout GENERATOR...] [--data TILE_ROOT | --real-train DIR... --real-test DIR...]
    vision synth-detect check IMAGE... --detector DIR/detector.onnx

`check` is torch-free (onnxruntime).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vision.synth.detector import CANON_QUALITY, Detector, Item, folder_items, tile_real_items
from vision.synth.detector_train import TrainConfig
from vision.synth.provenance import read_provenance


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision synth-detect", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, export ONNX, evaluate on held-out images")
    t.add_argument("--synthetic", nargs="+", required=True, help="training `vision synth` dirs")
    t.add_argument("--test-synthetic", nargs="+", required=True, help="held-out synth dirs")
    t.add_argument("--val-synthetic", nargs="*", default=[], help="dirs to set the threshold")
    t.add_argument("--holdout", nargs="*", default=[], help="generators kept out of training")
    t.add_argument("--data", help="magnetic-tile root (default: the shared datasets)")
    t.add_argument("--real-train", nargs="*", default=[], help="real image dirs (not tiles)")
    t.add_argument("--real-test", nargs="*", default=[], help="real held-out image dirs")
    t.add_argument("--real-val", nargs="*", default=[], help="real threshold-setting dirs")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=TrainConfig.steps)
    t.add_argument("--batch", type=int, default=TrainConfig.batch)
    t.add_argument("--crop", type=int, default=TrainConfig.crop)
    t.add_argument("--width", type=int, default=TrainConfig.width)
    t.add_argument("--mine", type=int, default=TrainConfig.mine, help="hard-negative candidates")
    t.add_argument("--background", type=float, default=TrainConfig.background)
    t.add_argument("--no-augment", action="store_true", help="no top-bottom flip, gain, offset")
    t.add_argument("--no-context", action="store_true", help="63 px receptive field, no context")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--threshold", type=float, default=0.5, help="used without --val-synthetic")
    c = sub.add_parser("check", help="print P(synthetic) per image")
    c.add_argument("images", nargs="+")
    c.add_argument("--detector", required=True, help="detector.onnx (or its folder)")
    c.add_argument("--threshold", type=float, help="default: the detector's own")
    return p


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


def train_command(a: argparse.Namespace) -> int:
    """Train, export `detector.onnx` (+ `detector.pt`), evaluate, write the report."""
    import torch

    from vision.synth.detector_report import calibrate, metrics, score, write_report
    from vision.synth.detector_train import export_onnx, set_metadata, train

    real_train, real_test, real_val = _real(a)
    synth_train = [it for it in _synthetic(a.synthetic) if it.group not in set(a.holdout)]
    synth_test, synth_val = _synthetic(a.test_synthetic), _synthetic(a.val_synthetic)
    train_items, test_items = real_train + synth_train, real_test + synth_test
    overlap = {it.path.resolve() for it in train_items} & {it.path.resolve() for it in test_items}
    if overlap:
        raise SystemExit(f"{len(overlap)} image(s) both in training and test, e.g. {overlap.pop()}")
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
    model, summary = train(train_items, cfg, log=lambda m: print(m, flush=True))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": vars(cfg)}, out / "detector.pt")
    seen = sorted({it.group for it in synth_train})
    meta = {"canonical_jpeg_quality": CANON_QUALITY, "trained_on": ",".join(seen)}
    onnx_path = export_onnx(model, out / "detector.onnx", meta)
    detector = Detector(onnx_path, a.threads)
    threshold = a.threshold
    if synth_val and real_val:
        val = score(detector, real_val + [i for i in synth_val if i.group in seen])
        synth_scores = np.concatenate([v for k, v in val.items() if k in seen])
        threshold = calibrate(val["real"], synth_scores)
        print(f"threshold {threshold:.4f} (best balanced accuracy on the validation images)")
    set_metadata(onnx_path, {"threshold": threshold})
    scores = score(detector, test_items)
    report = metrics(scores, threshold, set(seen))
    report["validation_images"] = {"real": len(real_val), "synthetic": len(synth_val)}
    report["training"] = {**summary, "generators": seen, "holdout": list(a.holdout)}
    report["test_images"] = {"real": len(real_test), "synthetic": len(synth_test)}
    report["source_leaks"] = source_leaks(train_items, test_items)
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
    return train_command(a) if a.command == "train" else check_command(a)


if __name__ == "__main__":
    import sys

    raise SystemExit(synth_detect(sys.argv[1:]))
