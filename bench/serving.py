"""Serving overhead benchmark: our server against in-process ONNX Runtime, and the alternatives.

    python -m bench.serving [--duration S] [--rounds R] [--concurrency 1,4] [--alternatives]

Builds two models into a temp dir, starts `python -m app serve` on loopback, and for
each model and concurrency measures, interleaved in `--rounds` rounds: in-process session.run
vs KServe v2 ModelInfer, and the in-process decode+pre+run+post pipeline vs vision.v1 Segment.
With --alternatives, also KServe and PyTriton (each in its own venv under bench/.venvs/) on the
tiny model, driven by the same load generator. Every subprocess is killed at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnxruntime

from bench import loadgen
from bench.loadgen import Call, LoadResult
from bench.models import BenchModel, pipeline_call, session_call, write_repository

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
VENVS = BENCH_DIR / ".venvs"
START_TIMEOUT_S = 180.0
INSTALL_TIMEOUT_S = 900.0
SESSION, KSERVE, PIPELINE, SEGMENT = (
    "in-process session.run",
    "ours KServe ModelInfer",
    "in-process pipeline",
    "ours vision.v1 Segment",
)
PAIRS = ((KSERVE, SESSION), (SEGMENT, PIPELINE))  # (server path, its in-process baseline)


@dataclass(frozen=True)
class Row:
    model: str
    path: str
    concurrency: int
    result: LoadResult


@dataclass(frozen=True)
class Alternative:
    name: str
    package: str
    requirements: tuple[str, ...]
    script: str
    goal: float  # ours/theirs throughput the issue asks for


ALTERNATIVES = (
    Alternative("kserve", "kserve", ("kserve==0.21.*", "onnxruntime", "numpy"), "kserve", 2.0),
    Alternative(
        "pytriton",
        "nvidia-pytriton",
        ("nvidia-pytriton==0.7.*", "onnxruntime", "numpy"),
        "pytriton",
        4.0,
    ),
)


@dataclass
class ServerProcess:
    """A server subprocess in its own process group, and how long it took to become ready."""

    name: str
    process: subprocess.Popen
    address: str
    cold_start_s: float = 0.0

    def rss_mb(self) -> float:
        """Resident memory of every process in the server's process group, in MiB."""
        return sum(_rss_kb(pid) for pid in _group_pids(self.process.pid)) / 1024.0

    def stop(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)
        with contextlib.suppress(ProcessLookupError):  # children left behind by the leader
            os.killpg(self.process.pid, signal.SIGKILL)


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def _rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server_process(
    name: str, command: list[str], port: int, models: list[str], log: Path, env=None
) -> Iterator[ServerProcess]:
    """Start `command`, wait until ServerReady and ModelReady for `models`; kill it on exit.

    The server gets its own process group (to kill its children too) but stays in our session:
    a new session would get its own scheduler autogroup, i.e. a CPU share of its own on a
    shared machine, and look faster than the in-process baseline for that reason alone.
    """
    address = f"{HOST}:{port}"
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, process_group=0
        )
    server = ServerProcess(name, process, address)
    try:
        while not all(loadgen.is_ready(address, m) for m in models):
            if process.poll() is not None or time.perf_counter() - started > START_TIMEOUT_S:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not become ready:\n{tail}")
            time.sleep(0.02)
        server.cold_start_s = time.perf_counter() - started
        yield server
    finally:
        server.stop()


def interleaved(paths: dict[str, list[Call]], rounds: int, chunk_s: float) -> dict[str, LoadResult]:
    """Warm every path, then run them in turn `rounds` times (order reversed every other round)."""
    names = list(paths)
    for name in names:
        loadgen.closed_loop(paths[name], min(0.5, chunk_s))
    results = {name: LoadResult(len(paths[name])) for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name] = results[name].merge(loadgen.closed_loop(paths[name], chunk_s))
    return results


def measure_model(model: BenchModel, address: str, args: argparse.Namespace) -> list[Row]:
    """All four paths of one model at each concurrency, interleaved."""
    session, pipeline = session_call(model), pipeline_call(model)
    rows = []
    for n in args.concurrency:
        infer = loadgen.infer_calls(address, model.name, "images", model.tensor, n)
        loadgen.check_infer_response(infer[0]())
        paths = {
            SESSION: [session] * n,
            KSERVE: infer,
            PIPELINE: [pipeline] * n,
            SEGMENT: loadgen.segment_calls(address, model.name, model.png, n),
        }
        results = interleaved(paths, args.rounds, args.duration / args.rounds)
        rows += [Row(model.name, path, n, result) for path, result in results.items()]
    return rows


def print_table(rows: list[Row], title: str) -> None:
    print(f"\n{title}")
    print(f"{'model':<8} {'path':<28} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} err")
    for row in rows:
        r = row.result
        print(
            f"{row.model:<8} {row.path:<28} {row.concurrency:>4} {r.throughput:>9.1f} "
            f"{r.percentile_ms(50):>8.2f} {r.percentile_ms(99):>8.2f} {r.errors}"
            + (f"  first error: {r.first_error}" if r.errors else "")
        )


def print_ratios(rows: list[Row]) -> None:
    """Server/in-process throughput ratio and added p50 for each model and concurrency."""
    index = {(r.model, r.path, r.concurrency): r.result for r in rows}
    print()
    for model, _, n in sorted({(r.model, "", r.concurrency) for r in rows}):
        for server, baseline in PAIRS:
            ours, base = index[(model, server, n)], index[(model, baseline, n)]
            ratio = ours.throughput / base.throughput if base.throughput else 0.0
            added = ours.percentile_ms(50) - base.percentile_ms(50)
            print(
                f"ratio {model} c={n} {server} / {baseline}: throughput {ratio:.3f}x "
                f"({ratio:.1%}), p50 {added:+.2f} ms"
            )


def ensure_venv(alt: Alternative) -> Path | None:
    """The alternative's venv python (created and installed on first use), or None."""
    venv = VENVS / alt.name
    python, marker = venv / "bin" / "python", venv / ".bench-requirements"
    wanted = " ".join(alt.requirements)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"{alt.name}: installing {wanted} into {venv} ...", flush=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *alt.requirements],
            check=True,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"{alt.name}: cannot install ({exc}); skipped\n{str(detail)[-1500:]}")
        return None
    marker.write_text(wanted)
    return python


def _venv_facts(python: Path, package: str) -> tuple[str, str]:
    """The package version and the interpreter's LIBDIR (for libpython)."""
    code = (
        "import importlib.metadata as m, sysconfig;"
        f"print(m.version({package!r}));print(sysconfig.get_config_var('LIBDIR'))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    version, libdir = (out.stdout.split() + ["?", ""])[:2]
    return version, libdir


def _alternative_command(
    alt: Alternative, python: Path, model: BenchModel, port: int, queue_delay_ms: float
) -> list[str]:
    script = BENCH_DIR / "alternatives" / f"{alt.script}_server.py"
    command = [str(python), str(script), "--onnx", str(model.onnx_path), "--name", model.name]
    command += ["--grpc-port", str(port), "--http-port", str(free_port())]
    if alt.name == "pytriton":
        command += ["--metrics-port", str(free_port()), "--max-batch-size", "8"]
        command += ["--queue-delay-us", str(int(queue_delay_ms * 1000))]
    return command


def run_alternative(
    alt: Alternative, ours: ServerProcess, tiny: BenchModel, args: argparse.Namespace, tmp: Path
) -> list[Row]:
    """Ours vs one alternative on the tiny model, same load generator, interleaved."""
    python = ensure_venv(alt)
    if python is None:
        return []
    version, libdir = _venv_facts(python, alt.package)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    label, port = f"{alt.name} {version}", free_port()
    command = _alternative_command(alt, python, tiny, port, args.queue_delay_ms)
    log = tmp / f"{alt.name}.log"
    try:
        with server_process(label, command, port, [tiny.name], log, env) as theirs:
            rows = []
            for n in args.concurrency:
                calls = loadgen.infer_calls(theirs.address, tiny.name, "images", tiny.tensor, n)
                loadgen.check_infer_response(calls[0]())
                ours_calls = loadgen.infer_calls(ours.address, tiny.name, "images", tiny.tensor, n)
                paths = {"ours": ours_calls, label: calls}
                results = interleaved(paths, args.rounds, args.duration / args.rounds)
                rows += [Row(tiny.name, p, n, r) for p, r in results.items()]
            print(
                f"{label}: cold start {theirs.cold_start_s:.2f} s, "
                f"RSS {theirs.rss_mb():.0f} MiB (process group)"
            )
            return rows
    except Exception as exc:  # noqa: BLE001 - report and go on with the next alternative
        print(f"{label}: failed: {exc}")
        return []


def print_alternative_ratios(alt_rows: dict[Alternative, list[Row]]) -> None:
    print()
    for alt, rows in alt_rows.items():
        by_key = {(r.path, r.concurrency): r.result for r in rows}
        theirs = {p for p, _ in by_key if p != "ours"}
        for label in sorted(theirs):
            for n in sorted({c for _, c in by_key}):
                ratio = by_key[("ours", n)].throughput / max(1e-9, by_key[(label, n)].throughput)
                print(f"ratio tiny c={n} ours / {label}: {ratio:.2f}x (goal >= {alt.goal:g}x)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per path and load")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated worker counts")
    parser.add_argument("--queue-delay-ms", type=float, default=0.0, help="batching delay")
    parser.add_argument("--seg-width", type=int, default=16, help="seg256 conv channels")
    parser.add_argument("--breakdown-calls", type=int, default=25, help="Segment stage timings")
    parser.add_argument("--alternatives", action="store_true", help="also KServe and PyTriton")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.rounds = max(1, args.rounds)
    return args


def _print_header(args: argparse.Namespace) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"bench.serving: {os.cpu_count()} CPUs (load average {load}), onnxruntime "
        f"{onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())}), "
        f"{args.duration:g} s per path in {args.rounds} interleaved "
        f"rounds, batching max 8 / {args.queue_delay_ms:g} ms queue delay",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _print_header(args)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        models = write_repository(tmp / "models", args.queue_delay_ms, args.seg_width)
        port = free_port()
        command = [sys.executable, "-m", "app", "serve", "--models", str(tmp / "models")]
        command += ["--host", HOST, "--grpc-port", str(port), "--http-port", "-1"]
        command += ["--log-level", "WARNING"]
        names = [m.name for m in models]
        with server_process("ours", command, port, names, tmp / "ours.log") as ours:
            rows = [row for model in models for row in measure_model(model, ours.address, args)]
            print(f"ours: cold start {ours.cold_start_s:.2f} s, RSS {ours.rss_mb():.0f} MiB")
            for model in models:
                calls = args.breakdown_calls
                print(loadgen.kserve_breakdown(ours.address, model.name, model.tensor, calls))
                print(loadgen.segment_breakdown(ours.address, model.name, model.png, calls))
                for n in (c for c in args.concurrency if c > 1):
                    print(loadgen.kserve_load_breakdown(ours.address, model.name, model.tensor, n))
            print_table(rows, "our server vs in-process (same machine, interleaved)")
            print_ratios(rows)
            if args.alternatives:
                alt_rows = {a: run_alternative(a, ours, models[1], args, tmp) for a in ALTERNATIVES}
                print_table(
                    [r for rows in alt_rows.values() for r in rows],
                    "tiny model over KServe v2 gRPC ModelInfer, same load generator",
                )
                print_alternative_ratios({a: r for a, r in alt_rows.items() if r})
    return 0


if __name__ == "__main__":
    sys.exit(main())
