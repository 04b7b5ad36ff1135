"""`vision synth-eval`: the paired experiment, without vs with synthetic images, on real tests.

Same architecture, step budget and seeds in both arms; the synthetic arm replaces `--ratio` of
every batch with `vision synth` images. Writes `report.json` and `gain.png` (mean +/- std per
arm) to reports/synth-eval/<experiment>/; runs (and the synthetic set) go to runs/synth-eval/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

from vision.datasets.locations import existing_dataset_dir
from vision.errors import ConfigError
from vision.synth_eval.experiment import EXPERIMENTS
from vision.synth_eval.runner import EvalOptions, run_experiment


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision synth-eval", description=__doc__)
    p.add_argument("--experiment", required=True, choices=sorted(EXPERIMENTS))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--ratio", type=float, default=0.25, help="synthetic share of each batch")
    p.add_argument("--epochs", type=int, default=0, help="0: the experiment's budget")
    p.add_argument("--steps-per-epoch", type=int, default=0, help="segmentation; 0: default")
    p.add_argument("--synth-count", type=int, default=0, help="0: the experiment's")
    p.add_argument("--train-limit", type=int, default=0, help="detection: training images")
    p.add_argument("--test-limit", type=int, default=0, help="0: the experiment's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--online",
        choices=("copy-paste", "procedural"),
        help="synthetic arm: make its images while training (class-balanced), no stored set",
    )
    p.add_argument("--online-reuse", type=int, default=4, help="batches each made image serves")
    p.add_argument("--data", type=Path, help="dataset folder (default: the shared datasets)")
    p.add_argument("--work", type=Path, help="default runs/synth-eval/<experiment>")
    p.add_argument("--out", type=Path, help="default reports/synth-eval/<experiment>")
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="report the finished runs under --work (seeds with both arms); train nothing",
    )
    return p


def options(argv: list[str]) -> EvalOptions:
    """The command line as explicit options (ConfigError / DatasetNotFoundError when invalid)."""
    a = _parser().parse_args(argv)
    exp = EXPERIMENTS[a.experiment]
    if a.synth_count:
        exp = dataclasses.replace(exp, synth_count=a.synth_count)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    if len(seeds) < 2:
        raise ConfigError("--seeds: give at least two seeds (mean +/- std needs them)")
    if a.online and exp.task != "segmentation":
        raise ConfigError(f"--online: segmentation experiments only, not {exp.name}")
    return EvalOptions(
        experiment=exp,
        seeds=seeds,
        root=existing_dataset_dir(exp.dataset, a.data),
        work=a.work or Path("runs") / "synth-eval" / exp.name,
        out=a.out or Path("reports") / "synth-eval" / exp.name,
        ratio=a.ratio,
        epochs=a.epochs,
        steps_per_epoch=a.steps_per_epoch,
        train_limit=a.train_limit,
        test_limit=a.test_limit,
        threads=a.threads,
        online=a.online,
        online_reuse=a.online_reuse,
        summarize_only=a.summarize_only,
        command="vision synth-eval " + shlex.join(argv),
    )


def synth_eval(argv: list[str]) -> int:
    """Run `vision synth-eval` with its own arguments; returns an exit code."""
    o = options(argv)
    report = run_experiment(o)
    print(json.dumps({"relative_gain": report["relative_gain"], "out": str(o.out)}, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(synth_eval(sys.argv[1:]))
