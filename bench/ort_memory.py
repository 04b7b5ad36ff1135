"""ONNX Runtime CPU memory settings side by side: latency and what stays resident.

Modes: `arena` (ORT's default BFC arena, which keeps every chunk it ever grew), `shrink` (the
arena, shrunk at the end of every run: run option `memory.enable_memory_arena_shrinkage`, what
`vision.runtime` uses) and `noarena` (`enable_cpu_mem_arena = False`). Latency: the three
sessions of one model in one process, runs interleaved (order reversed every other round),
median per batch size, ratio to `arena`. Resident memory: a fresh subprocess per mode runs the
model at batch 1 and 8, then reads VmRSS.

    .venv/bin/python -m bench.ort_memory                       # the bundled FP32 models
    .venv/bin/python -m bench.ort_memory --models retina-vessels --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODES = ("arena", "shrink", "noarena")
MODELS = Path(__file__).parents[1] / "models"
DEFAULT_MODELS = ("blood-cells", "pcb-defects", "retina-vessels", "tile-defects")


def session(path: Path, mode: str) -> tuple[ort.InferenceSession, ort.RunOptions | None]:
    """A CPU session over `path` in `mode`, with the run options the mode needs."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = mode != "noarena"
    run = None
    if mode == "shrink":
        run = ort.RunOptions()
        run.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), run


def _feed(sess: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    node = sess.get_inputs()[0]
    shape = [batch, *(d if isinstance(d, int) else 1 for d in node.shape[1:])]
    return {node.name: np.random.default_rng(0).random(shape, np.float32)}


def latency(path: Path, batch: int, rounds: int) -> dict[str, float]:
    """Median seconds per run for each mode, runs interleaved."""
    sessions = {mode: session(path, mode) for mode in MODES}
    feed = _feed(sessions["arena"][0], batch)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for sess, run in sessions.values():
        sess.run(None, feed, run)
    for index in range(rounds):
        order = MODES if index % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            sess, run = sessions[mode]
            started = time.perf_counter()
            sess.run(None, feed, run)
            times[mode].append(time.perf_counter() - started)
    return {mode: statistics.median(values) for mode, values in times.items()}


def resident_mib(path: Path, mode: str) -> float:
    """VmRSS (MiB) of a fresh process after running `path` in `mode` at batch 1 and 8."""
    code = (
        "import sys; from pathlib import Path; from bench.ort_memory import session, _feed\n"
        f"s, r = session(Path({str(path)!r}), {mode!r})\n"
        "[s.run(None, _feed(s, b), r) for b in (1, 8)]\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024.0


def main(argv: list[str] | None = None) -> int:
    """Print, per model, latency ratios to the default arena and RSS per mode."""
    p = argparse.ArgumentParser(prog="bench.ort_memory", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    for name in args.models:
        path = MODELS / name / "1" / "model.onnx"
        for batch in (1, 8):
            t = latency(path, batch, args.rounds)
            ratios = ", ".join(f"{m} {t[m] * 1e3:.1f} ms ({t[m] / t['arena']:.2f}x)" for m in MODES)
            print(f"{name} b{batch}: {ratios}", flush=True)
        rss = ", ".join(f"{m} {resident_mib(path, m):.0f} MiB" for m in MODES)
        print(f"{name} RSS after b1+b8: {rss}", flush=True)
    print(f"(command: python -m bench.ort_memory {' '.join(sys.argv[1:])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
