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
import time
from pathlib import Path
from typing import Any

import numpy as np

from vision.paths import datasets_root
from vision.synth.arms import Budget, run_detection, run_segmentation
from vision.synth.dataset import DATASET_DIRS
from vision.synth.experiment import EXPERIMENTS, Experiment, synthesize
from vision.synth.pcbview import kept_sources, pcb_view

ARMS = ("baseline", "synthetic")
RARE_MEAN = "rare mean"


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


def prepare(exp: Experiment, root: Path, work: Path) -> tuple[Path, set[str] | None, dict]:
    """Training data folder, allowed synthesis sources and the data notes of an experiment."""
    if exp.train_images:
        keep = first_training_images(exp, root)
        return root, keep, {"reduced_training_set": {"first_training_images": len(keep)}}
    if exp.keep_fraction >= 1.0:
        return root, None, {}
    view = work / "data"
    notes = pcb_view(root, view, exp.rare[0], exp.keep_fraction)
    return view, kept_sources(view), {"reduced_training_set": notes}


def first_training_images(exp: Experiment, root: Path) -> set[str]:
    """Dataset-relative paths of the `exp.train_images` training images both arms train on
    (the detection trainer's `limit`: the first N of the recipe's training split)."""
    from vision.detect.recipes import RECIPES
    from vision.detect.train import splits

    recipe = dataclasses.replace(RECIPES[exp.recipe], data=str(Path(root).resolve()))
    train = splits(recipe)[0][: exp.train_images]
    return {str(Path(s.image).resolve().relative_to(Path(root).resolve())) for s in train}


def run_arm(
    exp: Experiment,
    data: Path,
    run_dir: Path,
    budget: Budget,
    synthetic: Path | None,
    ratio: float,
    online=None,
) -> dict:
    """One trained and scored arm; reuses `result.json` when its settings match."""
    settings = {"budget": dataclasses.asdict(budget), "ratio": ratio, "exp": exp.name}
    if online is not None:
        settings["online"] = {"generator": online.generator, "reuse": online.reuse}
    cached = run_dir / "result.json"
    if cached.is_file():
        old = json.loads(cached.read_text())
        if old.get("settings") == settings:
            return old
    if online is not None:
        trained = run_segmentation(exp, data, run_dir, budget, None, ratio, online)
    else:
        runner = run_segmentation if exp.task == "segmentation" else run_detection
        trained = runner(exp, data, run_dir, budget, synthetic, ratio)
    result = {"settings": settings, **trained}
    scores = result["scores"]
    scores[RARE_MEAN] = float(np.mean([scores[c] for c in exp.rare]))
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


def finished(work: Path, seeds: list[int]) -> tuple[dict[str, list[dict]], list[int]]:
    """The cached results of the seeds whose two arms both finished."""
    path = "{}/seed{}/result.json"
    done = [s for s in seeds if all((work / path.format(a, s)).is_file() for a in ARMS)]
    if not done:
        raise SystemExit(f"no seed has finished both arms under {work}")
    runs = {
        arm: [json.loads((work / path.format(arm, s)).read_text()) for s in done] for arm in ARMS
    }
    return runs, done


def summarize(exp: Experiment, runs: dict[str, list[dict]]) -> dict:
    """Mean +/- std (sample std) per arm and key, and the relative gain of the synthetic arm."""
    keys = [*exp.rare, RARE_MEAN]
    keys += [k for k in runs["baseline"][0]["scores"] if k not in keys and "images" not in k]
    arms = {}
    for arm, items in runs.items():
        table = {k: [float(r["scores"][k]) for r in items] for k in keys}
        arms[arm] = {
            k: {
                "mean": float(np.mean(v)),
                "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "per_seed": [round(x, 4) for x in v],
            }
            for k, v in table.items()
        }
    gain = {}
    for k in keys:
        base, synth = arms["baseline"][k]["mean"], arms["synthetic"][k]["mean"]
        gain[k] = (synth - base) / base if base > 0 else None
    return {"arms": arms, "relative_gain": gain, "absolute_gain": _absolute(arms, keys)}


def _absolute(arms: dict, keys: list[str]) -> dict:
    return {k: arms["synthetic"][k]["mean"] - arms["baseline"][k]["mean"] for k in keys}


def plot(exp: Experiment, summary: dict, path: Path) -> Path:
    """Grouped bars (baseline vs synthetic) of the rare-class metrics with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [*exp.rare, RARE_MEAN]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(1.8 * len(keys) + 2, 4))
    for i, arm in enumerate(ARMS):
        stats = summary["arms"][arm]
        means = [stats[k]["mean"] for k in keys]
        stds = [stats[k]["std"] for k in keys]
        ax.bar(x + (i - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=4, label=arm)
    labels = []
    for k in keys:
        g = summary["relative_gain"][k]
        labels.append(f"{k}\n{'n/a' if g is None else f'{100 * g:+.1f} %'}")
    ax.set_xticks(x, labels)
    ax.set(ylabel=exp.metric.split(" on ")[0], title=f"{exp.name}: mean +/- std over seeds")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _options(a: argparse.Namespace) -> tuple[Experiment, list[int], Path, Path, Path]:
    exp = EXPERIMENTS[a.experiment]
    if a.synth_count:
        exp = dataclasses.replace(exp, synth_count=a.synth_count)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    if len(seeds) < 2:
        raise SystemExit("--seeds: give at least two seeds (mean +/- std needs them)")
    root = a.data or datasets_root() / DATASET_DIRS[exp.dataset]
    if not Path(root).is_dir():
        raise SystemExit(f"{root}: dataset not found (shared datasets root: {datasets_root()})")
    work = a.work or Path("runs") / "synth-eval" / exp.name
    out = a.out or Path("reports") / "synth-eval" / exp.name
    return exp, seeds, Path(root), work, out


def _online(exp: Experiment, root: Path, a: argparse.Namespace) -> Any:
    """Online synthesis for the synthetic arm, from the experiment's training split."""
    if exp.task != "segmentation":
        raise SystemExit(f"--online: segmentation experiments only, not {exp.name}")
    from vision.synth.dataset import load_sources, paste_config
    from vision.synth.online import OnlineSynthesis

    src = load_sources(exp.dataset, root, exp.rare, "", exp.max_sources, 0, exp.foreground)
    options = {"paste": paste_config(exp.dataset)}
    return OnlineSynthesis(src, a.online, 0, a.online_reuse, exp.per_image, options)


def _synthetic_record(a: argparse.Namespace, exp: Experiment, folder: Path, info: dict) -> dict:
    if a.online:
        return {"online": a.online, "reuse": a.online_reuse, "class_balanced": True}
    return {"folder": str(folder), "requested": exp.synth_count, **info}


def synth_eval(argv: list[str]) -> int:
    """Run `vision synth-eval` with its own arguments; returns an exit code."""
    from tqdm import tqdm

    a = _parser().parse_args(argv)
    exp, seeds, root, work, out = _options(a)
    started = time.perf_counter()
    synth_dir = work / f"synthetic-{exp.synth_count}"
    if a.summarize_only:
        runs, seeds = finished(work, seeds)
        synth_info, notes = json.loads((synth_dir / "synth.json").read_text()), {}
    else:
        data, keep, notes = prepare(exp, root, work)
        online = _online(exp, root, a) if a.online else None
        synth_info = synthesize(exp, root, synth_dir, 0, keep) if not online else {}
        runs = {arm: [] for arm in ARMS}
        jobs = [(seed, arm) for seed in seeds for arm in ARMS]
        for seed, arm in tqdm(jobs, desc=f"synth-eval {exp.name}", unit="run"):
            limit = a.train_limit or exp.train_images
            budget = Budget(seed, a.epochs, a.steps_per_epoch, a.threads, limit, a.test_limit)
            synthetic = synth_dir if arm == "synthetic" and not online else None
            ratio = a.ratio if arm == "synthetic" else 0.0
            arm_online = online if arm == "synthetic" else None
            run_dir = work / (f"{arm}-online" if arm_online else arm) / f"seed{seed}"
            result = run_arm(exp, data, run_dir, budget, synthetic, ratio, arm_online)
            runs[arm].append(result)
            tqdm.write(f"{arm} seed {seed}: {json.dumps(result['scores'])}")
    report = {
        "experiment": exp.name,
        "task": exp.task,
        "dataset": exp.dataset,
        "rare_classes": list(exp.rare),
        "metric": exp.metric,
        "seeds": seeds,
        "ratio": a.ratio,
        "steps": runs["baseline"][0]["steps"],
        "overrides": {k: str(v) for k, v in exp.overrides.items()},
        "synthetic": _synthetic_record(a, exp, synth_dir, synth_info),
        **notes,
        **summarize(exp, runs),
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
        "command": "vision synth-eval " + shlex.join(argv),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(exp, report, out / "gain.png")
    print(json.dumps({"relative_gain": report["relative_gain"], "out": str(out)}, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(synth_eval(sys.argv[1:]))
