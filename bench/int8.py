"""INT8 vs FP32 of the reference models that have an INT8 twin: speed and metric, per variant.

For each model (`blood-cells`: detection, val mAP@0.5; `retina-vessels`: segmentation, val Dice)
the FP32 model, the shipped twin (`models/<name>-int8`) and fresh quantisations with
`vision.quantize` (`Int8Options`: QDQ vs QOperator, per-channel vs per-tensor, `reduce_range`,
signed activations; calibrated as the exports do) run side by side in one process: sessions as
the server makes them (`vision.runtime.OnnxModel`, the config's runtime), rounds interleaved,
median ms at batch 1 and 8, speed-up = FP32 ms / INT8 ms; metric drop in points on the same
validation images. The CPU's INT8 instruction flags are printed with the table. JSON lands in
`bench/results/int8.json`.

    .venv/bin/python -m bench.int8                              # both models, every variant
    .venv/bin/python -m bench.int8 --models retina-vessels --rounds 3 --variants qdq-pc,qoperator-pc
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision.config import ModelConfig, load_config
from vision.quantize import Int8Options, quantize_int8
from vision.runtime import OnnxModel

MODELS = Path(__file__).parents[1] / "models"
RESULTS = Path(__file__).parent / "results" / "int8.json"
VARIANTS = {
    o.label: o
    for o in (
        Int8Options(),
        Int8Options(per_channel=False),
        Int8Options(reduce_range=True),
        Int8Options(quant_format="qoperator"),
        Int8Options(signed_activations=True),
        Int8Options(float_tail=True),
        Int8Options(quant_format="qoperator", float_tail=True),
    )
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


@dataclass
class Task:
    """How to calibrate and score one model: inputs, metric (0..1) of an ONNX file, op types."""

    calibration: list[np.ndarray]
    metric: Callable[[Path], float]
    metric_name: str
    op_types: tuple[str, ...] | None


@dataclass
class Subject:
    """One graph under test and its timings per batch size."""

    label: str
    path: Path
    metric: float = 0.0
    session: OnnxModel | None = None
    times: dict[int, list[float]] = field(default_factory=dict)


def detection_task(config: ModelConfig, limit: int) -> Task:
    """blood-cells: 16 validation images to calibrate (as `vision detect export`), val mAP."""
    from vision.detect.exporting import preprocessed, val_map, val_samples
    from vision.detect.recipes import RECIPES
    from vision.loader import open_model

    recipe = RECIPES[config.name]
    samples = val_samples(recipe, limit)
    calib = [t[None] for t in preprocessed(config, val_samples(recipe, 16))]

    def metric(path: Path) -> float:
        return val_map(open_model(config, path), samples, recipe)[0]

    return Task(calib, metric, "val mAP", ("Conv",))


def segmentation_task(config: ModelConfig, limit: int) -> Task:
    """retina-vessels: 16 training images to calibrate (as `vision segment export`), val Dice."""
    from vision.datasets.locations import existing_dataset_dir
    from vision.segment.evaluate import (
        compute_metrics,
        load_samples,
        make_pipeline,
        model_inputs,
        onnx_predict,
        spread,
    )
    from vision.segment.model import get_recipe

    recipe = get_recipe(config.name)
    root = existing_dataset_dir(recipe.dataset)
    split_file = MODELS / config.name / "splits.json"
    train = spread(load_samples(recipe, root, "train", split_file), 16)
    calib, _ = model_inputs(make_pipeline(config), train)
    samples = load_samples(recipe, root, "val", split_file, limit)

    def metric(path: Path) -> float:
        return float(compute_metrics(recipe, onnx_predict(path, config, samples), samples)["dice"])

    return Task([t[None] for t in calib], metric, "val Dice", None)


TASKS = {"detection": detection_task, "segmentation": segmentation_task}


def cpu_flags() -> str:
    """Which INT8-relevant instruction sets /proc/cpuinfo lists."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    line = next((row for row in text.splitlines() if row.startswith("flags")), "")
    flags = set(line.split())
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in CPU_FLAGS)


def subjects(name: str, variants: list[str], task: Task, tmp: Path) -> list[Subject]:
    """FP32, the shipped twin (when there is one) and each fresh variant."""
    source = MODELS / name / "1" / "model.onnx"
    out = [Subject("fp32", source)]
    twin = MODELS / f"{name}-int8" / "1" / "model.onnx"
    if twin.is_file():
        out.append(Subject("shipped-int8", twin))
    for label in variants:
        path = tmp / name / f"{label}.onnx"
        quantize_int8(source, task.calibration, path, task.op_types, VARIANTS[label])
        out.append(Subject(label, path))
    return out


def time_all(subjects: list[Subject], config: ModelConfig, batches: list[int], rounds: int):
    """Interleaved runs: every subject at every batch size, `rounds` times, order alternating."""
    spec = config.input
    for s in subjects:
        s.session = OnnxModel(s.path, config.runtime)
        s.session.warmup((1,))
    for batch in batches:
        shape = (batch, spec.channels, spec.height, spec.width)
        feeds = {spec.name: np.random.default_rng(0).random(shape, np.float32)}
        for index in range(rounds):
            for s in subjects if index % 2 == 0 else subjects[::-1]:
                started = time.perf_counter()
                s.session.run(feeds)
                s.times.setdefault(batch, []).append(time.perf_counter() - started)


def report(name: str, subjects: list[Subject], metric_name: str, batches: list[int]) -> dict:
    """Print the table; the figures as a dict."""
    fp32 = subjects[0]
    ms = {s.label: {b: 1e3 * statistics.median(s.times[b]) for b in batches} for s in subjects}
    print(f"{name} ({metric_name} FP32 {100 * fp32.metric:.2f}):")
    rows = {}
    for s in subjects:
        speed = {b: ms["fp32"][b] / ms[s.label][b] for b in batches}
        drop = 100 * (fp32.metric - s.metric)
        cells = "  ".join(f"b{b} {ms[s.label][b]:7.1f} ms ({speed[b]:.2f}x)" for b in batches)
        print(f"  {s.label:14s} {cells}  {metric_name} {100 * s.metric:6.2f} (drop {drop:+.2f})")
        rows[s.label] = {"ms": ms[s.label], "speedup": speed, "metric": s.metric, "drop": drop}
    return rows


def op_profile(path: Path, config: ModelConfig, batch: int, runs: int = 5) -> dict[str, float]:
    """Kernel ms per run by operator type (ORT's own profiler), over `runs` runs at `batch`
    after one unprofiled warm-up run."""
    import onnxruntime as ort

    from vision.runtime import session_options

    options = session_options(config.runtime)
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = config.input
    shape = (batch, spec.channels, spec.height, spec.width)
    feeds = {spec.name: np.random.default_rng(0).random(shape, np.float32)}
    for _ in range(runs + 1):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    first_run = next((e for e in events if e.get("name") == "model_run"), None)
    skip_until = (first_run or {}).get("ts", 0) + (first_run or {}).get("dur", 0)
    totals: dict[str, float] = {}
    for event in events:
        if event.get("ts", 0) < skip_until:
            continue  # the warm-up run
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0))
    return {op: t / 1e3 / runs for op, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def print_profiles(name: str, group: list[Subject], config: ModelConfig, tmp: Path) -> dict:
    """Per subject, kernel ms per run at batch 1 by operator type (the largest six)."""
    out = {}
    for s in group:
        copy = tmp / f"{name}-{s.label}-profile.onnx"
        copy.write_bytes(s.path.read_bytes())
        ms = op_profile(copy, config, 1)
        out[s.label] = ms
        top = ", ".join(f"{op} {t:.1f}" for op, t in list(ms.items())[:6])
        print(f"  profile {s.label:14s} total {sum(ms.values()):6.1f} ms: {top}")
    return out


def write_twin(name: str, label: str, task: Task, rows: dict) -> Path:
    """Make `label` the bundled `<name>-int8` (same calibration as measured), its card saying
    what was measured; returns the model folder."""
    from vision.export import read_card, write_repository_entry

    twin = MODELS / f"{name}-int8"
    source = MODELS / name / "1" / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        path = quantize_int8(
            source, task.calibration, Path(tmp) / "model.onnx", task.op_types, VARIANTS[label]
        )
        row = rows[label]
        card = read_card(twin)
        card["int8"] = {
            **card.get("int8", {}),
            "variant": label,
            "val_metric": round(row["metric"], 4),
            "speedup_b1_b8": [round(row["speedup"][b], 2) for b in sorted(row["speedup"])],
            "note": f"bench.int8 variant {label} ({task.metric_name} drop {row['drop']:+.2f} "
            "points); measured FP32 vs INT8 interleaved in one process, see bench/results",
        }
        card["versions"] = {}
        return write_repository_entry(MODELS, load_config(twin), path, card, 1)


def main(argv: list[str] | None = None) -> int:
    """Quantise, score and time each model's variants; print and write the results."""
    p = argparse.ArgumentParser(prog="bench.int8", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="blood-cells,retina-vessels")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help="validation images (0: all)")
    p.add_argument("--profile", action="store_true", help="add ORT's per-operator time shares")
    p.add_argument("--no-metric", action="store_true", help="time only (metrics left at 0)")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    p.add_argument("--write-twin", default="", help="variant to write as models/<name>-int8")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    print(f"CPU: {cpu_flags()}")
    results: dict = {
        "cpu": cpu_flags(),
        "command": " ".join(["python -m bench.int8", *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            config = load_config(MODELS / name)
            task = TASKS[config.task](config, args.limit)
            group = subjects(name, args.variants.split(","), task, Path(tmp))
            for s in group if not args.no_metric else ():
                s.metric = task.metric(s.path)
            time_all(group, config, batches, args.rounds)
            results[name] = report(name, group, task.metric_name, batches)
            if args.profile:
                results[f"{name}-profile"] = print_profiles(name, group, config, Path(tmp))
            if args.write_twin:
                print(f"wrote {write_twin(name, args.write_twin, task, results[name])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"(command: {results['command']}; written {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
