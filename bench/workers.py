"""Requests per second against `vision serve --workers N`, every N side by side in one run.

    python -m bench.workers [--workers 1,2] [--concurrency 8] [--duration S] [--rounds R]
                            [--loadgen-cpus 1 --server-cpus 0] [--alternatives] [--json PATH]

Starts one `python -m app serve --workers N` per N at once (each on its own ports, over the
benchmark repository of `bench/models.py`: `tiny` and `seg256`) and drives them in turn,
interleaved in rounds, with the same closed-loop load generator (`bench/loadgen.py`, one gRPC
connection per client thread, so the kernel spreads the connections over the workers). With
`--loadgen-cpus` the load generator is pinned there (sched_setaffinity) and the servers are
started under `taskset -c --server-cpus`, every ONNX Runtime session with as many intra-op
threads as those CPUs (its default pool pins a thread to every core, past taskset). With
`--alternatives`, KServe 0.21 and PyTriton 0.7 (`bench/alternatives/`, in their own venvs
under bench/.venvs/, made on first use) serve the
same tiny ONNX file under the same pinning and take turns with ours on the tiny model: same
load generator, same run. Prints the table, each N's req/s over N=1's, ours over each
alternative (req/s, and server CPU time per request, i.e. capacity per core, which a loaded
machine distorts far less than req/s), and where the CPU went (on a small machine the load
generator competes with the servers); writes bench/results/workers.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import loadgen
from bench.loadgen import LoadResult
from bench.models import BenchModel, write_repository
from bench.serving import (
    ALTERNATIVES,
    HOST,
    Alternative,
    Row,
    ServerProcess,
    _alternative_command,
    _group_pids,
    _venv_facts,
    ensure_venv,
    free_port,
    print_table,
    server_process,
)
from bench.shm_profile import profile
from vision.config import load_config, write_config

RESULTS = Path(__file__).resolve().parent / "results" / "workers.json"


@dataclass
class Served:
    """One server under test: its label in the table, its process, the models it serves."""

    label: str
    server: ServerProcess
    models: tuple[str, ...]
    goal: float = 0.0  # ours / this one's req/s the issue asks for (alternatives)
    cpu_s: dict[str, float] = field(default_factory=dict)  # per model, over its turns


def _listening(port: int) -> int:
    """How many sockets listen on `port` (one per worker under SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
    return count


def _cpu_list(spec: str) -> set[int]:
    """The CPUs of a taskset list such as "0", "0-3" or "0,2"."""
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def pin_sessions(models: list[BenchModel], cpus: str) -> None:
    """Give our models as many intra-op threads as the servers have CPUs: ONNX Runtime's default
    pool pins one thread to every core itself, past taskset (as the alternatives get through
    BENCH_ORT_THREADS)."""
    for model in models:
        config = load_config(model.folder)
        runtime = replace(config.runtime, intra_op_threads=len(_cpu_list(cpus)))
        write_config(replace(config, runtime=runtime), model.folder)


def _pinned(command: list[str], cpus: str) -> list[str]:
    return [shutil.which("taskset") or "taskset", "-c", cpus, *command] if cpus else command


@contextlib.contextmanager
def workers_server(n: int, models: Path, tmp: Path, server_cpus: str) -> Iterator[Served]:
    """`vision serve --workers n` on free ports, once all n workers listen."""
    port = free_port()
    command = [sys.executable, "-m", "app", "serve", "--models", str(models), "--host", HOST]
    command += ["--grpc-port", str(port), "--http-port", str(free_port())]
    command += ["--workers", str(n), "--log-level", "WARNING"]
    label, names = f"workers={n}", ("tiny", "seg256")
    with server_process(
        label, _pinned(command, server_cpus), port, list(names), tmp / f"w{n}.log"
    ) as server:
        deadline = time.monotonic() + 180.0
        while _listening(port) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"--workers {n}: only {_listening(port)} workers listen")
            time.sleep(0.2)
        yield Served(label, server, names)


@contextlib.contextmanager
def alternative_server(
    alt: Alternative, tiny: BenchModel, tmp: Path, server_cpus: str
) -> Iterator[Served | None]:
    """KServe or PyTriton over the tiny ONNX file (None, said so, when it cannot start)."""
    python = ensure_venv(alt)
    if python is None:
        yield None
        return
    version, libdir = _venv_facts(python, alt.package)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    if server_cpus:  # ORT's default pool would pin a thread to every core, past taskset
        env["BENCH_ORT_THREADS"] = str(len(_cpu_list(server_cpus)))
    port, label = free_port(), f"{alt.name} {version}"
    command = _pinned(_alternative_command(alt, python, tiny, port, 0.0), server_cpus)
    with contextlib.ExitStack() as stack:
        log = tmp / f"{alt.name}.log"
        try:
            server = stack.enter_context(
                server_process(label, command, port, [tiny.name], log, env)
            )
        except Exception as exc:  # noqa: BLE001 - report it and measure the others
            print(f"{label}: cannot start ({exc}); skipped", flush=True)
            server = None
        yield Served(label, server, (tiny.name,), alt.goal) if server is not None else None


def _processes(pgid: int) -> set[int]:
    """The server's process group and every descendant (workers have groups of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
    found, todo = set(), list(_group_pids(pgid))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += [child for child, parent in parents.items() if parent == pid]
    return found


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the server's processes (`_processes`)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for each in _processes(pgid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _idle_share() -> tuple[float, float]:
    """(idle + iowait jiffies, all jiffies) of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)


def _turns(model: BenchModel, served: list[Served], args: argparse.Namespace) -> dict:
    """Each server's turns on `model`, interleaved (order reversed every other round); the
    CPU its process group used during its own turns is added to `Served.cpu_s`."""
    paths = {}
    for each in served:
        calls = loadgen.infer_calls(
            each.server.address, model.name, "images", model.tensor, args.concurrency
        )
        loadgen.check_infer_response(calls[0]())
        loadgen.closed_loop(calls, min(0.5, args.duration / args.rounds))  # warm-up
        paths[each.label] = calls
        each.cpu_s[model.name] = 0.0
    results = {each.label: LoadResult(args.concurrency) for each in served}
    for index in range(args.rounds):
        for each in served if index % 2 == 0 else served[::-1]:
            before = _group_cpu_s(each.server.process.pid)
            turn = loadgen.closed_loop(paths[each.label], args.duration / args.rounds)
            each.cpu_s[model.name] += _group_cpu_s(each.server.process.pid) - before
            results[each.label] = results[each.label].merge(turn)
    return results


def measure(served: list[Served], models: list, args: argparse.Namespace) -> tuple[list, dict]:
    """Every server that serves each model, at the same concurrency, interleaved; where the
    CPU went: cores used by the load generator (this process) and by each server while driven,
    and the share of the machine left idle."""
    rows, cpu = [], {}
    for model in models:
        present = [s for s in served if model.name in s.models]
        before, wall, idle = os.times(), time.perf_counter(), _idle_share()
        results = _turns(model, present, args)
        after, idle_after, elapsed = os.times(), _idle_share(), time.perf_counter() - wall
        used = (after.user - before.user) + (after.system - before.system)
        cpu[model.name] = {
            "load generator": used / elapsed,
            **{
                f"server {s.label}": s.cpu_s[model.name] / max(1e-9, results[s.label].elapsed_s)
                for s in present
            },
            "machine idle share": (idle_after[0] - idle[0]) / max(1, idle_after[1] - idle[1]),
        }
        rows += [Row(model.name, label, args.concurrency, r) for label, r in results.items()]
    return rows, cpu


def cpu_per_request_us(rows: list[Row], served: list[Served]) -> dict[str, float]:
    """Server CPU microseconds per answered request, per model and server."""
    by_label = {s.label: s for s in served}
    return {
        f"{r.model} {r.path}": by_label[r.path].cpu_s[r.model] / r.result.requests * 1e6
        for r in rows
        if r.result.requests and r.path in by_label
    }


def ratios(rows: list[Row]) -> dict[str, float]:
    """req/s of each N over N=1's, per model."""
    base = {r.model: r.result.throughput for r in rows if r.path == "workers=1"}
    return {
        f"{r.model} {r.path}": r.result.throughput / base[r.model]
        for r in rows
        if r.path.startswith("workers=") and r.path != "workers=1" and base.get(r.model)
    }


def alternative_ratios(rows: list[Row], served: list[Served], cpu_us: dict) -> dict:
    """Ours (each N) over each alternative on the tiny model: req/s, and CPU per request
    (theirs / ours: above 1, ours does a request with less CPU)."""
    tiny = {r.path: r.result.throughput for r in rows if r.model == "tiny"}
    figures = {}
    for alt in (s for s in served if not s.label.startswith("workers=")):
        for ours in (s.label for s in served if s.label.startswith("workers=")):
            key = f"tiny {ours} / {alt.label}"
            figures[key] = {
                "throughput_ratio": tiny[ours] / max(1e-9, tiny[alt.label]),
                "cpu_per_request_ratio": cpu_us[f"tiny {alt.label}"]
                / max(1e-9, cpu_us[f"tiny {ours}"]),
                "goal": alt.goal,
            }
    return figures


def _profiled(served: Served, tiny: BenchModel, seconds: float) -> str:
    """Where workers=1's time goes per tiny ModelInfer (bench/shm_profile.py groups)."""
    call = loadgen.infer_calls(served.server.address, tiny.name, "images", tiny.tensor, 1)[0]
    return profile(served.server.process.pid, call, seconds, "tiny ModelInfer requests")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per N and model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--loadgen-cpus", default="", help="pin the load generator, e.g. 1")
    parser.add_argument("--server-cpus", default="", help="taskset CPUs of the servers, e.g. 0")
    parser.add_argument(
        "--alternatives", action="store_true", help="KServe 0.21 and PyTriton 0.7 on tiny too"
    )
    parser.add_argument(
        "--profile", type=float, default=0.0, help="then S seconds of py-spy on workers=1, tiny"
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the figures go")
    args = parser.parse_args(argv)
    args.workers = sorted({int(n) for n in args.workers.split(",") if n.strip()} | {1})
    args.rounds = max(1, args.rounds)
    return args


def print_figures(rows: list[Row], figures: dict, versus: dict, cpu_us: dict, cpu: dict):
    """The ratio lines, CPU per request and where the CPU went."""
    print()
    for label, ratio in figures.items():
        model, path = label.split(" ", 1)
        print(f"ratio {model} {path} / workers=1: {ratio:.2f}x req/s")
    for label, values in versus.items():
        print(
            f"ratio {label}: {values['throughput_ratio']:.2f}x req/s (goal >= "
            f"{values['goal']:g}x), CPU per request theirs/ours "
            f"{values['cpu_per_request_ratio']:.2f}x"
        )
    for label, micros in cpu_us.items():
        print(f"server CPU per request {label}: {micros:.0f} us")
    for model, shares in cpu.items():
        parts = ", ".join(
            f"{k} {v:.0%}" if k.endswith("share") else f"{k} {v:.2f} cores"
            for k, v in shares.items()
        )
        print(f"CPU while driving {model}: {parts}")


def _serve_all(stack: contextlib.ExitStack, models: list, tmp: Path, args) -> list[Served]:
    served = [
        stack.enter_context(workers_server(n, tmp / "models", tmp, args.server_cpus))
        for n in args.workers
    ]
    for alt in ALTERNATIVES if args.alternatives else ():
        theirs = stack.enter_context(alternative_server(alt, models[1], tmp, args.server_cpus))
        served += [theirs] if theirs is not None else []
    return served


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    command_line = "python -m bench.workers " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"bench.workers: {os.cpu_count()} CPUs (load average "
        f"{', '.join(f'{x:.1f}' for x in load_before)}), N = {args.workers}, "
        f"{args.concurrency} client threads",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        models = write_repository(tmp / "models", 0.0)
        if args.server_cpus:
            pin_sessions(models, args.server_cpus)
        served = _serve_all(stack, models, tmp, args)
        if args.loadgen_cpus:
            os.sched_setaffinity(0, _cpu_list(args.loadgen_cpus))
        rows, cpu = measure(served, [models[1], models[0]], args)
        breakdown = _profiled(served[0], models[1], args.profile) if args.profile > 0 else ""
    print_table(rows, "req/s against --workers N (same load generator, interleaved)")
    cpu_us = cpu_per_request_us(rows, served)
    figures, versus = ratios(rows), alternative_ratios(rows, served, cpu_us)
    print_figures(rows, figures, versus, cpu_us, cpu)
    if breakdown:
        print(breakdown)
    record = {
        "command": command_line.strip(),
        "cpus": os.cpu_count(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "loadgen_cpus": args.loadgen_cpus,
        "server_cpus": args.server_cpus,
        "rows": [
            {
                "model": r.model,
                "path": r.path,
                "concurrency": r.concurrency,
                "throughput": r.result.throughput,
                "p50_ms": r.result.percentile_ms(50),
                "p99_ms": r.result.percentile_ms(99),
                "errors": r.result.errors,
            }
            for r in rows
        ],
        "ratios": figures,
        "versus_alternatives": versus,
        "server_cpu_per_request_us": cpu_us,
        "cpu_while_driven": cpu,
        "profile_workers1_tiny": breakdown,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.json} ({command_line.strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
