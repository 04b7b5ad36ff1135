"""`vision synth-detect`: train a real-vs-synthetic detector, or check images with one.

    vision synth-detect train --synthetic DIR... --test-synthetic DIR... --out DIR
        [--holdout GENERATOR...] [--data TILE_ROOT | --real-train DIR... --real-test DIR...]
    vision synth-detect evaluate --detector DIR/detector.pt (the train image options) --out DIR
    vision synth-detect check IMAGE... --detector DIR/detector.onnx

`check` is torch-free (onnxruntime).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vision.synth_detect.train import TrainConfig
from vision.synth_detect.workflow import (
    DataOptions,
    check_images,
    evaluate_detector,
    train_detector,
)


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


def _data_options(a: argparse.Namespace) -> DataOptions:
    """The parsed image-set arguments as explicit options (the command line kept for the report)."""
    return DataOptions(
        synthetic=a.synthetic,
        test_synthetic=a.test_synthetic,
        out=Path(a.out),
        val_synthetic=a.val_synthetic,
        holdout=a.holdout,
        data=a.data,
        real_train=a.real_train,
        real_test=a.real_test,
        real_val=a.real_val,
        threads=a.threads,
        threshold=a.threshold,
        record=vars(a),
    )


def _train_config(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
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


def synth_detect(argv: list[str]) -> int:
    """Run `vision synth-detect` with its own arguments; returns an exit code."""
    a = _parser().parse_args(argv)
    if a.command == "train":
        return train_detector(_data_options(a), _train_config(a))
    if a.command == "evaluate":
        return evaluate_detector(a.detector, _data_options(a))
    for image, p, flagged in check_images([Path(i) for i in a.images], a.detector, a.threshold):
        print(f"{image}\t{p:.4f}\t{'synthetic' if flagged else 'real'}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(synth_detect(sys.argv[1:]))
