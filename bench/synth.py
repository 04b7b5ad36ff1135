"""Synthesis speed, and what online synthesis costs a training epoch, side by side in one run.

    .venv/bin/python -m bench.synth                        # magnetic-tile Fray,Crack
    .venv/bin/python -m bench.synth --count 60 --steps 20 --rounds 3 --threads 2

1. Images per second of each generator (`copy-paste`, `procedural`) in one process, the sources
   loaded once beforehand (as in training).
2. The tile-defects training epoch (`--steps` steps) without synthesis and with online synthesis
   (copy-paste) at `--ratio` of each batch, each made image serving 1 or `--reuse` batches;
   rounds alternate between the arms so that other load on the machine spreads evenly.
   Printed: seconds per epoch (median) and the slowdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def generator_speed(sources, generator: str, count: int, seed: int) -> dict:
    """Images per second (and the share of attempts that placed nothing)."""
    from vision.synth.online import OnlineSynthesis

    online = OnlineSynthesis(sources, generator, seed)
    start = time.perf_counter()
    made = sum(online.make(i) is not None for i in range(count))
    seconds = time.perf_counter() - start
    return {"images_per_s": count / seconds, "placed": made / count, "count": count}


def epoch_seconds(recipe, data, online, ratio: float, epoch: int) -> float:
    """Wall-clock seconds of one training epoch (model fresh each time: same work)."""
    import torch

    from vision.segment.train import _epoch, build_model, make_loss

    model = build_model(recipe)
    optim = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    mix = (0, ratio if online else 0.0)
    start = time.perf_counter()
    _epoch(model, optim, make_loss(recipe), data, recipe, epoch, lambda: 0.0, mix, online)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="../shared/datasets/magnetic-tile")
    p.add_argument("--classes", default="Fray,Crack")
    p.add_argument("--count", type=int, default=60, help="images per generator")
    p.add_argument("--steps", type=int, default=20, help="training steps per timed epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reuse", type=int, default=4, help="batches each made image serves")
    p.add_argument("--out", default="reports/bench/synth.json")
    a = p.parse_args(argv)

    import torch

    from vision.segment.model import get_recipe
    from vision.segment.train import Prepared, load_splits
    from vision.synth.dataset import load_sources
    from vision.synth.online import OnlineSynthesis

    torch.set_num_threads(a.threads)
    root, classes = Path(a.data), tuple(a.classes.split(","))
    sources = load_sources("magnetic-tile", root, classes, limit=0)
    speed = {g: generator_speed(sources, g, a.count, 0) for g in ("copy-paste", "procedural")}
    for g, s in speed.items():
        print(f"{g:11s} {s['images_per_s']:6.1f} images/s  (placed {100 * s['placed']:.0f} %)")

    recipe = dataclasses.replace(get_recipe("tile-defects"), steps_per_epoch=a.steps)
    splits = load_splits(recipe, root, Path("runs/bench-synth"))
    data = Prepared.of(splits["train"], recipe)
    arms = {
        "real only": None,
        "online, reuse 1": OnlineSynthesis(sources, "copy-paste", 0, reuse=1),
        f"online, reuse {a.reuse}": OnlineSynthesis(sources, "copy-paste", 0, reuse=a.reuse),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(a.rounds):
        for name, online in arms.items():
            times[name].append(epoch_seconds(recipe, data, online, a.ratio, r))
    base = float(np.median(times["real only"]))
    report = {"generators": speed, "epoch_s": {}, "ratio": a.ratio, "steps": a.steps}
    for name, values in times.items():
        med = float(np.median(values))
        report["epoch_s"][name] = med
        print(f"epoch ({a.steps} steps) {name:18s} {med:6.2f} s  x{med / base:.3f}")
    report["slowdown"] = {n: report["epoch_s"][n] / base - 1.0 for n in arms if n != "real only"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
