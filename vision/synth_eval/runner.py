"""Run the paired experiment: both arms per seed, cached results, summary, plot and report.

Same architecture, step budget and seeds in both arms; the synthetic arm replaces `ratio` of
every batch with `vision synth` images (or images made while training). Functions take explicit
options (`EvalOptions`); `vision.synth_eval.cli` parses the command line into them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision.errors import ConfigError, DatasetNotFoundError
from vision.synth.dataset import load_sources, paste_config
from vision.synth.online import OnlineSynthesis
from vision.synth_eval.arms import AT_GATE, Budget, run_detection, run_segmentation
from vision.synth_eval.experiment import Experiment, synthesize
from vision.synth_eval.pcbview import kept_sources, pcb_view
from vision.synth_eval.verdict import goal, trained

ARMS = ("baseline", "synthetic")
RARE_MEAN = "rare mean"


@dataclass
class EvalOptions:
    """One `vision synth-eval` run: the experiment, its seeds and budget, and the folders."""

    experiment: Experiment
    seeds: list[int]
    root: Path  # the dataset folder
    work: Path  # runs (and the synthetic set)
    out: Path  # report.json, gain.png
    ratio: float = 0.25
    epochs: int = 0
    steps_per_epoch: int = 0
    train_limit: int = 0
    test_limit: int = 0
    threads: int = 1
    online: str | None = None  # generator of online synthesis for the synthetic arm
    online_reuse: int = 4
    summarize_only: bool = False
    command: str = ""  # the command line, for the report


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
    settings["overrides"] = json.loads(json.dumps(exp.overrides))  # a changed recipe retrains
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
    gated = [f"{c} {AT_GATE}" for c in exp.rare]
    if all(k in scores for k in gated):
        scores[f"{RARE_MEAN} {AT_GATE}"] = float(np.mean([scores[k] for k in gated]))
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


def finished(work: Path, seeds: list[int]) -> tuple[dict[str, list[dict]], list[int]]:
    """The cached results of the seeds whose two arms both finished."""
    path = "{}/seed{}/result.json"
    done = [s for s in seeds if all((work / path.format(a, s)).is_file() for a in ARMS)]
    if not done:
        raise DatasetNotFoundError(f"no seed has finished both arms under {work}")
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


def online_synthesis(
    exp: Experiment, root: Path, generator: str, reuse: int, seed: int = 0
) -> OnlineSynthesis:
    """Online synthesis for the synthetic arm, from the experiment's training split; `seed`
    (the training seed) seeds the sources and the generator."""
    if exp.task != "segmentation":
        raise ConfigError(f"--online: segmentation experiments only, not {exp.name}")
    src = load_sources(exp.dataset, root, exp.rare, "", exp.max_sources, seed, exp.foreground)
    options = {"paste": paste_config(exp.dataset)}
    return OnlineSynthesis(src, generator, seed, reuse, exp.per_image, options)


def seed_folder(synth_dir: Path, seed: int) -> Path:
    """The stored synthetic images of one seed (each training seed has its own synthesis)."""
    return synth_dir / f"seed{seed}"


def _synthetic_record(o: EvalOptions, folder: Path, info: dict) -> dict:
    if o.online:
        return {"online": o.online, "reuse": o.online_reuse, "class_balanced": True}
    per_seed = {str(seed): found for seed, found in info.items()}
    return {
        "folder": str(folder),
        "requested": o.experiment.synth_count,
        "seeded_by": "the training seed (one synthesis per seed)",
        "written": sum(found.get("written", 0) for found in per_seed.values()),
        "per_seed": per_seed,
    }


def _train_arms(o: EvalOptions, synth_dir: Path) -> tuple[dict, dict, dict]:
    """Train and score both arms for every seed; (runs per arm, synthesis info, data notes)."""
    from tqdm import tqdm

    exp = o.experiment
    data, keep, notes = prepare(exp, o.root, o.work)
    synth_info: dict = {}
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    jobs = [(seed, arm) for seed in o.seeds for arm in ARMS]
    for seed, arm in tqdm(jobs, desc=f"synth-eval {exp.name}", unit="run"):
        limit = o.train_limit or exp.train_images
        budget = Budget(seed, o.epochs, o.steps_per_epoch, o.threads, limit, o.test_limit)
        online = None
        if arm == "synthetic" and o.online:  # the synthesis seed follows the training seed
            online = online_synthesis(exp, o.root, o.online, o.online_reuse, seed)
        elif arm == "synthetic":
            synth_info[seed] = synthesize(exp, o.root, seed_folder(synth_dir, seed), seed, keep)
        synthetic = seed_folder(synth_dir, seed) if arm == "synthetic" and not online else None
        ratio = o.ratio if arm == "synthetic" else 0.0
        arm_online = online
        run_dir = o.work / (f"{arm}-online" if arm_online else arm) / f"seed{seed}"
        result = run_arm(exp, data, run_dir, budget, synthetic, ratio, arm_online)
        runs[arm].append(result)
        tqdm.write(f"{arm} seed {seed}: {json.dumps(result['scores'])}")
    return runs, synth_info, notes


def run_experiment(o: EvalOptions) -> dict:
    """Train (or, with `summarize_only`, collect) both arms, then write `report.json` and
    `gain.png` to `o.out`; returns the report."""
    exp, seeds = o.experiment, o.seeds
    started = time.perf_counter()
    synth_dir = o.work / f"synthetic-{exp.synth_count}"
    if o.summarize_only:
        runs, seeds = finished(o.work, seeds)
        synth_info = {
            s: json.loads((seed_folder(synth_dir, s) / "synth.json").read_text())
            for s in seeds
            if (seed_folder(synth_dir, s) / "synth.json").is_file()
        }
        notes = {}
    else:
        runs, synth_info, notes = _train_arms(o, synth_dir)
    summary = summarize(exp, runs)
    report = {
        "experiment": exp.name,
        "task": exp.task,
        "dataset": exp.dataset,
        "rare_classes": list(exp.rare),
        "metric": exp.metric,
        "seeds": seeds,
        "ratio": o.ratio,
        "steps": runs["baseline"][0]["steps"],
        "overrides": {k: str(v) for k, v in exp.overrides.items()},
        "synthetic": _synthetic_record(o, synth_dir, synth_info),
        **notes,
        **summary,
        "baseline_trained": trained(runs["baseline"]),
        "goal": goal(summary, exp.rare, AT_GATE if exp.task == "segmentation" else ""),
        "goal_ungated": goal(summary, exp.rare) if exp.task == "segmentation" else None,
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
        "command": o.command,
    }
    o.out.mkdir(parents=True, exist_ok=True)
    (o.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(exp, report, o.out / "gain.png")
    return report
