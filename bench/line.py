"""Line-rate benchmark: the highest frame rate a detection model sustains through `Inspect`,
side by side with one unary `Detect` per frame from the same client.

    .venv/bin/python -m bench.line                 # full run (about 35 min on 2 CPUs)
    .venv/bin/python -m bench.line --quick         # smoke: short probes, 2 rates, 20 s soak
    .venv/bin/python -m bench.line --models blood-cells --precisions fp32 --cameras 1

Serves `pcb-defects` and `blood-cells` (bundled) and their INT8 versions (`blood-cells-int8`
bundled; `pcb-defects-int8` made at run time with `vision.quantize` on DeepPCB trainval images)
from a temp repository with `python -m app serve` on loopback. A camera is a client thread
sending the same JPEG frames (DeepPCB test boards 640x640, BCCD smears 640x480) at a fixed rate
with capture timestamps, through one `Inspect` stream (policy `every`) or one `Detect` call per
frame. For each model, precision and camera count, a bisection over the offered frame rate finds
the highest rate with p99 verdict latency (capture to verdict at the client) within one frame
interval, every frame answered and no growing backlog; stream and unary probes alternate. Then
the latency distribution at 80 % of the sustained stream rate over `--soak-s` seconds (FP32, one
camera). Writes `line.json` and `line.png` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from bench.serving import HOST, free_port, server_process
from protos.vision.v1 import vision_pb2 as pb
from serving.client import VisionClient
from vision.config import ModelConfig, load_config, write_config
from vision.io import decode_image
from vision.loader import version_numbers
from vision.paths import PROJECT_ROOT, datasets_root
from vision.pipeline import Pipeline
from vision.quantize import quantize_int8

STREAM, UNARY = "stream", "unary"
PATHS = (STREAM, UNARY)
BACKLOG_MARGIN = 0.5  # of a frame interval: last third's median latency over the first third's
ANSWERED_MIN = 0.99  # of the frames scheduled in a probe
SEARCH_HEADROOM = 1.6  # upper bound of the search: x closed-loop unary throughput per camera
START_DELAY_NS = 300_000_000
MODELS = ("pcb-defects", "blood-cells")
DEFAULT_OUT = PROJECT_ROOT / "reports" / "bench-line"
DATASETS = {"pcb-defects": "DeepPCB test boards", "blood-cells": "BCCD test smears"}


# ---------------------------------------------------------------- frames and repository


def pcb_images(split: str, count: int) -> list[Path]:
    """DeepPCB images to inspect (`*_test.jpg`) of `split` (test | trainval), in list order."""
    root = datasets_root() / "deeppcb" / "PCBData"
    names = (root / f"{split}.txt").read_text().split()[::2][:count]
    return [root / name.replace(".jpg", "_test.jpg") for name in names]


def bccd_images(split: str, count: int) -> list[Path]:
    """BCCD JPEGs of `split` (test | trainval), in list order."""
    root = datasets_root() / "bccd" / "BCCD"
    names = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:count]
    return [root / "JPEGImages" / f"{name}.jpg" for name in names]


IMAGES: dict[str, Callable[[str, int], list[Path]]] = {
    "pcb-defects": pcb_images,
    "blood-cells": bccd_images,
}


def camera_frames(model: str, count: int) -> tuple[list[bytes], str] | str:
    """The model's camera frames (JPEG bytes as stored) and their resolution, or why not."""
    try:
        paths = IMAGES[model]("test", count)
        frames = [p.read_bytes() for p in paths]
    except OSError as exc:
        return f"{DATASETS[model]} not found under {datasets_root()} ({exc})"
    height, width = decode_image(frames[0]).pixels.shape[:2]
    return frames, f"{width}x{height}"


def link_model(name: str, root: Path, new_name: str = "") -> ModelConfig:
    """A config copy of bundled model `name` in `root` over symlinks to its version folders."""
    source = PROJECT_ROOT / "models" / name
    config = load_config(source)
    if new_name:
        config = replace(config, name=new_name, explain=replace(config.explain, file=""))
    write_config(config, root / config.name)
    for version in version_numbers(source, config.model_file):
        (root / config.name / str(version)).symlink_to((source / str(version)).resolve())
    return config


def int8_twin(name: str, root: Path, calib_count: int) -> ModelConfig:
    """`<name>-int8` in `root`: `vision.quantize` (convolutions only, as `vision detect export`
    does) of the bundled FP32 model, calibrated on `calib_count` trainval images."""
    source = PROJECT_ROOT / "models" / name
    config = load_config(source)
    pipeline = Pipeline(config)
    images = IMAGES[name]("trainval", calib_count)
    calib = [pipeline.preprocess(decode_image(p.read_bytes()))[0][None] for p in images]
    twin = replace(
        config,
        name=f"{name}-int8",
        explain=replace(config.explain, file=""),
        description=f"{config.description} INT8 (static QDQ) twin made by bench.line.",
    )
    version = version_numbers(source, config.model_file)[-1]
    quantize_int8(
        source / str(version) / config.model_file,
        calib,
        root / twin.name / str(version) / config.model_file,
        op_types=("Conv",),
    )
    write_config(twin, root / twin.name)
    return twin


@dataclass(frozen=True)
class Subject:
    """One served model under test and the frames its cameras send."""

    model: str  # served name
    base: str  # the FP32 model it belongs to
    precision: str  # fp32 | int8
    frames: list[bytes]
    resolution: str
    note: str = ""


def prepare(root: Path, args: argparse.Namespace) -> list[Subject]:
    """Write the temp repository and list what to measure (skipping a model without frames)."""
    subjects = []
    for base in args.models:
        got = camera_frames(base, args.frames)
        if isinstance(got, str):
            print(f"{base}: skipped: {got}", flush=True)
            continue
        frames, resolution = got
        if "fp32" in args.precisions:
            link_model(base, root)
            subjects.append(Subject(base, base, "fp32", frames, resolution))
        if "int8" in args.precisions:
            subjects.append(_int8_subject(base, root, frames, resolution, args.calib))
    return subjects


def _int8_subject(base: str, root: Path, frames: list[bytes], res: str, calib: int) -> Subject:
    bundled = PROJECT_ROOT / "models" / f"{base}-int8"
    if (bundled / "config.yaml").is_file():
        link_model(bundled.name, root)
        return Subject(bundled.name, base, "int8", frames, res, "bundled")
    started = time.perf_counter()
    twin = int8_twin(base, root, calib)
    note = f"vision.quantize on {calib} trainval images ({time.perf_counter() - started:.1f} s)"
    print(f"{twin.name}: {note}", flush=True)
    return Subject(twin.name, base, "int8", frames, res, note)


# ---------------------------------------------------------------- one camera


@dataclass
class CameraLog:
    """What one camera saw in one run; latencies by sequence number (capture order)."""

    scheduled: int
    sent: int = 0
    late: int = 0  # frames sent more than one interval after their capture time
    errors: int = 0
    dropped: int = 0
    latencies_ms: dict[int, float] = field(default_factory=dict)
    server_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """When a camera captures its frames: `count` frames every `interval_ns` from `start_ns`;
    it stops waiting for answers at `end_ns` (wall clock, ns)."""

    start_ns: int
    interval_ns: int
    count: int
    end_ns: int

    def due(self, index: int) -> int:
        return self.start_ns + index * self.interval_ns


def _sleep_until(wall_ns: int) -> None:
    wait = (wall_ns - time.time_ns()) / 1e9
    if wait > 0:
        time.sleep(wait)


def _latency_ms(capture_ns: int) -> float:
    return (time.time_ns() - capture_ns) / 1e6


def stream_camera(
    client: VisionClient,
    subject: Subject,
    plan: Plan,
    log: CameraLog,
    on_verdict: Callable[[], None] | None = None,
) -> None:
    """Send the plan's frames through one `Inspect` stream (policy every), record verdicts."""

    def frames():
        for index in range(plan.count):
            due = plan.due(index)
            _sleep_until(due)
            if time.time_ns() > plan.end_ns:
                return
            log.late += time.time_ns() - due > plan.interval_ns
            log.sent += 1
            yield VisionClient.frame(subject.frames[index % len(subject.frames)], index, due)

    verdicts = client.inspect(subject.model, frames(), camera_id="bench", policy="every")
    timer = threading.Timer(max(0.0, (plan.end_ns - time.time_ns()) / 1e9), verdicts.cancel)
    timer.start()
    try:
        for verdict in verdicts:
            _record_verdict(verdict, plan, log)
            if on_verdict:
                on_verdict()
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            log.errors += 1
    finally:
        timer.cancel()


def _record_verdict(verdict: pb.Verdict, plan: Plan, log: CameraLog) -> None:
    if verdict.status == pb.VERDICT_STATUS_ERROR:
        log.errors += 1
    elif verdict.status == pb.VERDICT_STATUS_DROPPED:
        log.dropped += 1
    else:
        log.latencies_ms[verdict.sequence] = _latency_ms(plan.due(verdict.sequence))
        log.server_ms.append(verdict.server_latency_ms)


def unary_camera(client: VisionClient, subject: Subject, plan: Plan, log: CameraLog) -> None:
    """The same frames, one `Detect` call per frame: the next goes when the last returned."""
    for index in range(plan.count):
        due = plan.due(index)
        _sleep_until(due)
        if time.time_ns() > plan.end_ns:
            return
        log.late += time.time_ns() - due > plan.interval_ns
        log.sent += 1
        try:
            response = client.detect(subject.model, subject.frames[index % len(subject.frames)])
        except grpc.RpcError:
            log.errors += 1
            continue
        log.latencies_ms[index] = _latency_ms(due)
        log.server_ms.append(response.timings.total_ms)


CAMERAS: dict[str, Callable[..., None]] = {STREAM: stream_camera, UNARY: unary_camera}
LABELS = {STREAM: "Inspect stream", UNARY: "unary Detect per frame"}


# ---------------------------------------------------------------- probes and their verdict


def backlog_ms(latencies: Sequence[float]) -> float:
    """Median latency of the last third minus that of the first third (capture order)."""
    third = len(latencies) // 3
    if third < 1:
        return 0.0
    return statistics.median(latencies[-third:]) - statistics.median(latencies[:third])


def judge(p99_ms: float, backlog: float, answered: int, scheduled: int, fps: float) -> str:
    """Why a probe at `fps` per camera is not sustained ("" when it is)."""
    interval_ms = 1e3 / fps
    reasons = []
    if answered < ANSWERED_MIN * scheduled:
        reasons.append(f"answered {answered}/{scheduled}")
    if p99_ms > interval_ms:
        reasons.append(f"p99 {p99_ms:.0f} > {interval_ms:.0f} ms")
    if backlog > BACKLOG_MARGIN * interval_ms:
        reasons.append(f"backlog +{backlog:.0f} ms")
    return ", ".join(reasons)


@dataclass(frozen=True)
class Probe:
    """One run of every camera at one offered rate (fps per camera) and its summary."""

    path: str
    model: str
    cameras: int
    fps: float
    duration_s: float
    scheduled: int
    sent: int
    answered: int
    errors: int
    dropped: int
    late: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    backlog_ms: float
    server_p50_ms: float
    reason: str

    @property
    def ok(self) -> bool:
        return not self.reason

    def line(self) -> str:
        state = "ok" if self.ok else f"NO ({self.reason})"
        return (
            f"{self.path:<6} {self.model:<18} c={self.cameras} {self.fps:6.2f} fps/camera: "
            f"p50 {self.p50_ms:6.1f} p99 {self.p99_ms:6.1f} max {self.max_ms:6.1f} ms, "
            f"backlog {self.backlog_ms:+6.1f} ms, {self.answered}/{self.scheduled} answered, "
            f"server p50 {self.server_p50_ms:.1f} ms: {state}"
        )


def summarize(
    path: str, subject: Subject, fps: float, duration: float, logs: list[CameraLog]
) -> Probe:
    """A Probe from the cameras' logs (backlog: the worst camera's)."""
    latencies = [v for log in logs for v in log.latencies_ms.values()] or [float("nan")]
    scheduled = sum(log.scheduled for log in logs)
    answered = sum(len(log.latencies_ms) for log in logs)
    backlog = max(
        backlog_ms([log.latencies_ms[k] for k in sorted(log.latencies_ms)]) for log in logs
    )
    p99 = float(np.percentile(latencies, 99))
    server = [v for log in logs for v in log.server_ms] or [float("nan")]
    return Probe(
        path=path,
        model=subject.model,
        cameras=len(logs),
        fps=fps,
        duration_s=duration,
        scheduled=scheduled,
        sent=sum(log.sent for log in logs),
        answered=answered,
        errors=sum(log.errors for log in logs),
        dropped=sum(log.dropped for log in logs),
        late=sum(log.late for log in logs),
        p50_ms=float(np.median(latencies)),
        p99_ms=p99,
        max_ms=float(np.max(latencies)),
        backlog_ms=backlog,
        server_p50_ms=float(np.median(server)),
        reason=judge(p99, backlog, answered, scheduled, fps),
    )


def plans(cameras: int, fps: float, duration_s: float, grace_s: float) -> list[Plan]:
    """One plan per camera, phases spread over one interval (free-running cameras)."""
    interval_ns = int(1e9 / fps)
    count = max(3, round(duration_s * fps))
    start = time.time_ns() + START_DELAY_NS
    end = start + count * interval_ns + int((grace_s + 2 / fps) * 1e9)
    return [
        Plan(start + k * interval_ns // cameras, interval_ns, count, end) for k in range(cameras)
    ]


def run_probe(
    path: str, clients: list[VisionClient], subject: Subject, fps: float, args: argparse.Namespace
) -> Probe:
    """Every camera (one thread and one client each) at `fps` for `args.probe_s` seconds."""
    time.sleep(args.settle_s)  # let the previous probe's leftovers finish
    camera_plans = plans(len(clients), fps, args.probe_s, args.grace_s)
    logs = [CameraLog(plan.count) for plan in camera_plans]
    threads = [
        threading.Thread(target=CAMERAS[path], args=(client, subject, plan, log), daemon=True)
        for client, plan, log in zip(clients, camera_plans, logs, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarize(path, subject, fps, args.probe_s, logs)


# ---------------------------------------------------------------- the rate search


@dataclass
class RateSearch:
    """Bisection over the offered rate: `lo` the highest sustained so far, `hi` the lowest not."""

    hi: float
    lo: float = 0.0
    probes: list[Probe] = field(default_factory=list)

    def next_rate(self) -> float:
        return round((self.lo + self.hi) / 2, 2)

    def record(self, probe: Probe) -> None:
        self.probes.append(probe)
        if probe.ok:
            self.lo = max(self.lo, probe.fps)
        else:
            self.hi = min(self.hi, probe.fps)

    def summary(self) -> dict:
        best = [p for p in self.probes if p.ok and p.fps == self.lo]
        return {
            "sustained_fps": self.lo,
            "not_sustained_fps": self.hi,
            "p99_ms_at_sustained": best[-1].p99_ms if best else None,
            "probes": [asdict(p) for p in self.probes],
        }


def capacity_fps(clients: list[VisionClient], subject: Subject, seconds: float) -> float:
    """Closed-loop unary `Detect` frames per second, all cameras together (the search's scale)."""
    counts = [0] * len(clients)
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < stop:
            clients[index].detect(
                subject.model, subject.frames[counts[index] % len(subject.frames)]
            )
            counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(clients))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


@dataclass
class Config:
    """One model at one camera count: both searches and the common-rate comparison."""

    subject: Subject
    cameras: int
    capacity_fps: float = 0.0
    searches: dict[str, RateSearch] = field(default_factory=dict)
    common: dict[str, Probe] = field(default_factory=dict)

    def gain(self) -> dict:
        stream, unary = self.searches[STREAM].lo, self.searches[UNARY].lo
        out = {"fps_ratio": stream / unary if unary else None}
        if self.common:
            s, u = self.common[STREAM], self.common[UNARY]
            out |= {"common_fps": s.fps, "p99_ratio_unary_over_stream": u.p99_ms / s.p99_ms}
        return out

    def to_json(self) -> dict:
        return {
            "model": self.subject.model,
            "base": self.subject.base,
            "precision": self.subject.precision,
            "cameras": self.cameras,
            "capacity_fps_closed_loop_unary": self.capacity_fps,
            **{path: search.summary() for path, search in self.searches.items()},
            "common_rate": {path: asdict(p) for path, p in self.common.items()},
            "gain": self.gain(),
        }


def measure_config(
    clients: list[VisionClient], config: Config, args: argparse.Namespace, bar: tqdm
) -> None:
    """Capacity estimate, interleaved stream/unary bisection, then both at the lower of the two
    sustained rates (the p99 comparison at one offered rate)."""
    subject = config.subject
    config.capacity_fps = capacity_fps(clients, subject, args.capacity_s)
    hi = round(SEARCH_HEADROOM * config.capacity_fps / config.cameras, 2)
    config.searches = {path: RateSearch(hi) for path in PATHS}
    for step in range(args.probes):
        for path in PATHS if step % 2 == 0 else PATHS[::-1]:
            search = config.searches[path]
            search.record(_probe(path, clients, subject, search.next_rate(), args, bar))
    common = min(search.lo for search in config.searches.values())
    if common > 0:
        config.common = {p: _probe(p, clients, subject, common, args, bar) for p in PATHS}
    else:
        bar.update(2)


def _probe(
    path: str,
    clients: list[VisionClient],
    subject: Subject,
    fps: float,
    args: argparse.Namespace,
    bar: tqdm,
) -> Probe:
    bar.set_postfix_str(f"{path} {subject.model} c={len(clients)} {fps:.2f} fps")
    probe = run_probe(path, clients, subject, fps, args)
    tqdm.write(probe.line())
    bar.update()
    return probe


# ---------------------------------------------------------------- soak


def soak(client: VisionClient, subject: Subject, fps: float, seconds: float) -> dict:
    """One camera streaming at `fps` for `seconds`: the latency distribution, drops, backlog."""
    [plan] = plans(1, fps, seconds, 2.0)
    log = CameraLog(plan.count)
    with tqdm(
        total=plan.count, desc=f"soak {subject.model} {fps:.2f} fps", unit="frame", mininterval=5.0
    ) as bar:
        stream_camera(client, subject, plan, log, on_verdict=bar.update)
    ordered = [log.latencies_ms[k] for k in sorted(log.latencies_ms)] or [float("nan")]
    answered = len(log.latencies_ms)
    per_minute = [
        float(np.percentile(ordered[i : i + round(60 * fps)], 99))
        for i in range(0, answered, max(1, round(60 * fps)))
    ]
    return {
        "model": subject.model,
        "precision": subject.precision,
        "cameras": 1,
        "fps": fps,
        "seconds": seconds,
        "scheduled": plan.count,
        "sent": log.sent,
        "answered": answered,
        "drops": plan.count - answered,
        "dropped_verdicts": log.dropped,
        "errors": log.errors,
        "late_sends": log.late,
        "p50_ms": float(np.median(ordered)),
        "p99_ms": float(np.percentile(ordered, 99)),
        "max_ms": float(np.max(ordered)),
        "backlog_ms": backlog_ms(ordered),
        "p99_ms_per_minute": per_minute,
        "server_p50_ms": float(np.median(log.server_ms or [float("nan")])),
    }


# ---------------------------------------------------------------- output


def table(configs: list[Config], soaks: list[dict]) -> list[str]:
    """Printed lines: sustained rates, ratios, p99 at the common rate; then the soaks."""
    lines = [
        f"{'model':<18} {'prec':<5} {'cams':>4} {'res':>8} {'stream fps':>11} {'unary fps':>10} "
        f"{'fps x':>6} {'at fps':>7} {'stream p99':>11} {'unary p99':>10} {'p99 /':>6}"
    ]
    for c in configs:
        s, u, gain = c.searches[STREAM], c.searches[UNARY], c.gain()
        ratio = f"{gain['fps_ratio']:.2f}" if gain["fps_ratio"] else "-"
        common = (
            f"{c.common[STREAM].fps:>7.2f} {c.common[STREAM].p99_ms:>9.1f}ms "
            f"{c.common[UNARY].p99_ms:>8.1f}ms {gain['p99_ratio_unary_over_stream']:>6.2f}"
            if c.common
            else f"{'-':>7} {'-':>11} {'-':>10} {'-':>6}"
        )
        lines.append(
            f"{c.subject.model:<18} {c.subject.precision:<5} {c.cameras:>4} "
            f"{c.subject.resolution:>8} {s.lo:>11.2f} {u.lo:>10.2f} {ratio:>6} {common}"
        )
    lines.append("(fps per camera; 'fps x' stream/unary sustained; 'p99 /' unary p99 / stream p99)")
    for s in soaks:
        lines.append(
            f"soak {s['model']} {s['precision']} 1 camera {s['fps']:.2f} fps {s['seconds']:.0f} s: "
            f"p50 {s['p50_ms']:.1f} p99 {s['p99_ms']:.1f} max {s['max_ms']:.1f} ms, "
            f"drops {s['drops']}/{s['scheduled']}, errors {s['errors']}, "
            f"backlog {s['backlog_ms']:+.1f} ms, late sends {s['late_sends']}"
        )
    return lines


def plot(configs: list[Config], path: Path) -> None:
    """p99 latency against offered fps per camera, stream vs unary, one panel per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = sorted({c.cameras for c in configs})
    models = list(dict.fromkeys(c.subject.model for c in configs))
    fig, axes = plt.subplots(
        len(models), len(cams), figsize=(5 * len(cams), 3.2 * len(models)), squeeze=False
    )
    for c in configs:
        _panel(axes[models.index(c.subject.model)][cams.index(c.cameras)], c)
    fig.suptitle("p99 verdict latency vs offered rate (filled: sustained; dashed: one interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _panel(ax: Any, config: Config) -> None:
    for path, colour in ((STREAM, "tab:blue"), (UNARY, "tab:orange")):
        probes = config.searches[path].probes + ([config.common[path]] if config.common else [])
        for ok in (True, False):
            chosen = sorted((p for p in probes if p.ok == ok), key=lambda p: p.fps)
            ax.scatter(
                [p.fps for p in chosen],
                [max(1.0, p.p99_ms) for p in chosen],
                color=colour if ok else "none",
                edgecolors=colour,
                label=LABELS[path] if ok else "_nolegend_",
            )
    top = config.searches[STREAM].hi * 1.05 or 1.0
    xs = np.linspace(top / 20, top, 50)
    ax.plot(xs, 1e3 / xs, "k--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_title(
        f"{config.subject.model} ({config.subject.precision}), {config.cameras} camera"
        + "s" * (config.cameras > 1)
    )
    ax.set_xlabel("offered fps per camera")
    ax.set_ylabel("p99 ms")
    ax.legend(fontsize=7)


def write_outputs(out: Path, result: dict, configs: list[Config]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "line.json").write_text(json.dumps(_finite(result), indent=1) + "\n")
    if configs:
        plot(configs, out / "line.png")
    print(f"wrote {out / 'line.json'}" + (f" and {out / 'line.png'}" if configs else ""))


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity (no answer at all) as None, for strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--cameras", default="1,4", help="comma-separated camera counts")
    parser.add_argument("--probe-s", type=float, default=8.0, help="seconds per probe")
    parser.add_argument("--probes", type=int, default=4, help="bisection steps per path")
    parser.add_argument("--grace-s", type=float, default=1.0, help="wait for answers after")
    parser.add_argument("--settle-s", type=float, default=0.5, help="idle before each probe")
    parser.add_argument("--capacity-s", type=float, default=3.0, help="closed-loop estimate")
    parser.add_argument("--soak-s", type=float, default=600.0, help="0: no soak")
    parser.add_argument("--frames", type=int, default=40, help="distinct images per camera")
    parser.add_argument("--calib", type=int, default=8, help="INT8 calibration images")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="3 s probes, 2 rates, 20 s soak")
    args = parser.parse_args(argv)
    if args.quick:
        args.probe_s, args.probes, args.capacity_s = min(args.probe_s, 3.0), 2, 1.5
        args.soak_s, args.calib = min(args.soak_s, 20.0), min(args.calib, 2)
    args.models = [m for m in args.models.split(",") if m]
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.cameras = [int(c) for c in args.cameras.split(",") if c]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}: use {list(MODELS)}")
    return args


def run(address: str, subjects: list[Subject], args: argparse.Namespace) -> tuple[list, list]:
    """Every config's searches, then the soaks (FP32, one camera)."""
    configs = [Config(s, n) for s in subjects for n in args.cameras]
    total = len(configs) * (2 * args.probes + 2)
    clients = [VisionClient(address, timeout_s=60.0) for _ in range(max(args.cameras))]
    try:
        with tqdm(total=total, desc="probes", unit="probe", mininterval=2.0) as bar:
            for config in configs:
                measure_config(clients[: config.cameras], config, args, bar)
        soaks = []
        for config in configs if args.soak_s > 0 else []:
            sustained = config.searches[STREAM].lo
            if config.subject.precision == "fp32" and config.cameras == 1 and sustained > 0:
                fps = round(0.8 * sustained, 2)
                soaks.append(soak(clients[0], config.subject, fps, args.soak_s))
        return configs, soaks
    finally:
        for client in clients:
            client.close()


def _first_frame_detections(address: str, subjects: list[Subject]) -> dict[str, int]:
    with VisionClient(address) as client:
        return {s.model: len(client.detect(s.model, s.frames[0]).detections) for s in subjects}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    started = time.time()
    print(f"bench.line: {os.cpu_count()} CPUs, load average {load_before[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-line-") as tmp_name:
        tmp = Path(tmp_name)
        subjects = prepare(tmp / "models", args)
        if not subjects:
            print("nothing to measure (no dataset found)")
            return 1
        port = free_port()
        command = [sys.executable, "-m", "app", "serve", "--models", str(tmp / "models")]
        command += ["--host", HOST, "--grpc-port", str(port), "--http-port", "-1"]
        command += ["--log-level", "WARNING"]
        names = [s.model for s in subjects]
        with server_process("ours", command, port, names, tmp / "server.log") as server:
            print(f"server ready in {server.cold_start_s:.1f} s: {', '.join(names)}", flush=True)
            detections = _first_frame_detections(server.address, subjects)
            configs, soaks = run(server.address, subjects, args)
    print("\n".join(table(configs, soaks)))
    result = {
        "bench": "line",
        "command": " ".join(
            ["python -m bench.line", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started_unix": started,
        "wall_s": time.time() - started,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "criteria": {
            "p99_within_interval": True,
            "answered_min_fraction": ANSWERED_MIN,
            "backlog_margin_of_interval": BACKLOG_MARGIN,
            "search_upper_bound_x_capacity": SEARCH_HEADROOM,
        },
        "subjects": {
            s.model: {
                "frames": DATASETS[s.base],
                "resolution": s.resolution,
                "note": s.note,
                "detections_first_frame": detections[s.model],
            }
            for s in subjects
        },
        "configs": [c.to_json() for c in configs],
        "soak": soaks,
    }
    write_outputs(args.out, result, configs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
