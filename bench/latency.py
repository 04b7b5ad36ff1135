"""CPU latency of the bundled models in-process (ONNX Runtime), FP32 beside INT8, batch 1 and 8.

    .venv/bin/python -m bench.latency                       # every model in models/
    .venv/bin/python -m bench.latency --models retina-vessels,retina-vessels-int8 --batches 1
    python -m bench.latency --models tile-defects --providers cpu,cuda   # on a GPU machine

Each model runs through `vision.runtime.OnnxModel` with its own config's runtime settings (the
server's session), on a fixed random input of its input size; rounds alternate between models
so that load from other processes spreads evenly. Printed per model and batch: ms per batch
(median, p90), ms per image, for an `<name>-int8` model its speed-up over `<name>`, and with
`--providers` each model once per provider (`name@cuda`) with its speed-up over `name@cpu`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision.config import ModelConfig, RuntimeSpec, load_config
from vision.loader import load_model
from vision.paths import default_repository
from vision.runtime import OnnxModel


@dataclass
class Subject:
    """One model at one batch size and its timings (seconds per batch)."""

    name: str
    batch: int
    model: OnnxModel
    feeds: dict[str, np.ndarray]
    times: list[float] = field(default_factory=list)

    def run_once(self) -> None:
        start = time.perf_counter()
        self.model.run(self.feeds)
        self.times.append(time.perf_counter() - start)


def _runtime(config: ModelConfig, threads: int, provider: str) -> RuntimeSpec:
    runtime = config.runtime
    if threads:
        runtime = dataclasses.replace(runtime, intra_op_threads=threads)
    if provider:
        runtime = dataclasses.replace(runtime, providers=(provider,))
    return runtime


def _subjects(
    repo: Path, names: list[str], batches: list[int], threads: int, providers: list[str]
) -> list[Subject]:
    out = []
    for name in names:
        config = load_config(repo / name)
        for provider in providers or [""]:
            runtime = _runtime(config, threads, provider)
            model = load_model(repo / name, runtime=runtime, explain=False, config=config).session
            label = f"{name}@{provider}" if provider else name
            spec = config.input
            for batch in batches:
                shape = (batch, spec.channels, spec.height, spec.width)
                pixels = np.random.default_rng(0).random(shape, dtype=np.float32)
                out.append(Subject(label, batch, model, {spec.name: pixels}))
    return out


def _baseline(name: str) -> str | None:
    """The subject `name` is compared with: `<m>` for `<m>-int8`, `<m>@cpu` for `<m>@<gpu>`."""
    if "@" in name:
        model, provider = name.split("@", 1)
        return f"{model}@cpu" if provider != "cpu" else None
    return name.removesuffix("-int8") if name.endswith("-int8") else None


def measure(subjects: list[Subject], rounds: int, per_round: int) -> None:
    """Warm up, then interleave `rounds` rounds of `per_round` runs per subject."""
    for subject in subjects:
        subject.run_once()
        subject.times.clear()
    for r in range(rounds):
        order = subjects if r % 2 == 0 else subjects[::-1]
        for subject in order:
            for _ in range(per_round):
                subject.run_once()


def report(subjects: list[Subject]) -> list[str]:
    """Table lines: model, batch, ms/batch p50 and p90, ms/image, speed-up over its baseline."""
    p50 = {(s.name, s.batch): float(np.median(s.times)) for s in subjects}
    lines = [f"{'model':<28}{'batch':>6}{'p50 ms':>10}{'p90 ms':>10}{'ms/img':>10}{'vs x':>8}"]
    for s in subjects:
        baseline = p50.get((_baseline(s.name) or "", s.batch))
        speedup = f"{baseline / p50[(s.name, s.batch)]:.2f}" if baseline else ""
        lines.append(
            f"{s.name:<28}{s.batch:>6}{p50[(s.name, s.batch)] * 1e3:>10.1f}"
            f"{np.percentile(s.times, 90) * 1e3:>10.1f}"
            f"{p50[(s.name, s.batch)] * 1e3 / s.batch:>10.1f}{speedup:>8}"
        )
    return lines


def shape_cycle(subjects: list[Subject], cycles: int) -> list[str]:
    """Each model (batch 1 subject) run at batch sizes 1..8 in turn, `cycles` times: the ms of
    a size's first run against its later ones shows what a batch size not warmed up costs
    (cuDNN's algorithm search, TensorRT's profiles) when a dynamic batcher forms it."""
    lines = [f"{'model':<28}{'batch':>6}{'first ms':>10}{'later p50':>10}"]
    for subject in (s for s in subjects if s.batch == 1):
        ((name, one),) = subject.feeds.items()
        times: dict[int, list[float]] = {b: [] for b in range(1, 9)}
        for _ in range(cycles):
            for batch in times:
                feeds = {name: np.repeat(one, batch, axis=0)}
                start = time.perf_counter()
                subject.model.run(feeds)
                times[batch].append(time.perf_counter() - start)
        for batch, values in times.items():
            later = float(np.median(values[1:])) * 1e3 if len(values) > 1 else float("nan")
            lines.append(f"{subject.name:<28}{batch:>6}{values[0] * 1e3:>10.1f}{later:>10.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=None, help="default: the bundled models/")
    parser.add_argument("--models", default="", help="comma-separated (default: all)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: config's)")
    parser.add_argument(
        "--providers", default="", help="comma-separated, e.g. cpu,cuda (default: config's)"
    )
    parser.add_argument(
        "--shape-cycle", type=int, default=0, help="also cycle batch 1..8 this many times"
    )
    args = parser.parse_args(argv)
    repo = args.repo or default_repository()
    names = [n for n in args.models.split(",") if n] or sorted(
        p.name for p in repo.iterdir() if (p / "config.yaml").is_file()
    )
    batches = [int(b) for b in args.batches.split(",")]
    providers = [p for p in args.providers.split(",") if p]
    subjects = _subjects(repo, names, batches, args.threads, providers)
    for subject in {s.name: s for s in subjects}.values():
        print(f"{subject.name}: {', '.join(subject.model.providers)}")
    measure(subjects, args.rounds, args.per_round)
    print("\n".join(report(subjects)))
    if args.shape_cycle:
        print("\n".join(shape_cycle(subjects, args.shape_cycle)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
