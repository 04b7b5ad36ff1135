"""Requests per second against `vision serve --workers N`, every N side by side in one run.

    python -m bench.workers [--workers 1,2] [--concurrency 8] [--duration S] [--rounds R]
                            [--loadgen-cpus 1 --server-cpus 0] [--json PATH]

Starts one `python -m app serve --workers N` per N at once (each on its own ports, over the
benchmark repository of `bench/models.py`: `tiny` and `seg256`) and drives them in turn,
interleaved in rounds, with the same closed-loop load generator (`bench/loadgen.py`, one gRPC
connection per client thread, so the kernel spreads the connections over the workers). With
`--loadgen-cpus` the load generator is pinned there (sched_setaffinity) and the servers are
started under `taskset -c --server-cpus`. Prints the table, each N's req/s over N=1's, and the
CPU time the load generator itself used (on a small machine it competes with the workers);
writes bench/results/workers.json.
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
from pathlib import Path

from bench import loadgen
from bench.models import write_repository
from bench.serving import HOST, Row, free_port, interleaved, print_table, server_process

RESULTS = Path(__file__).resolve().parent / "results" / "workers.json"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
    return found


def _listening(port: int) -> int:
    """How many sockets listen on `port` (one per worker under SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
    return count


@contextlib.contextmanager
def workers_server(n: int, models: Path, tmp: Path, server_cpus: str) -> Iterator[object]:
    """`vision serve --workers n` on free ports, once all n workers listen."""
    port = free_port()
    command = [sys.executable, "-m", "app", "serve", "--models", str(models), "--host", HOST]
    command += ["--grpc-port", str(port), "--http-port", str(free_port())]
    command += ["--workers", str(n), "--log-level", "WARNING"]
    if server_cpus:
        command = [shutil.which("taskset") or "taskset", "-c", server_cpus, *command]
    with server_process(
        f"workers={n}", command, port, ["tiny", "seg256"], tmp / f"w{n}.log"
    ) as server:
        deadline = time.monotonic() + 180.0
        while _listening(port) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"--workers {n}: only {_listening(port)} workers listen")
            time.sleep(0.2)
        server.workers = n
        yield server


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and its children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for each in (pid, *_children(pid)):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _idle_share() -> tuple[float, float]:
    """(idle + iowait jiffies, all jiffies) of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)


def measure(servers: list, models: list, args: argparse.Namespace) -> tuple[list[Row], dict]:
    """Every server at the same concurrency, per model, interleaved; where the CPU went.

    CPU figures are cores in use while a model was driven: the load generator (this process),
    each server's process tree (parent and workers) over the time it was driven, and the share
    of the machine left idle.
    """
    rows, cpu = [], {}
    for model in models:
        paths = {}
        for server in servers:
            calls = loadgen.infer_calls(
                server.address, model.name, "images", model.tensor, args.concurrency
            )
            loadgen.check_infer_response(calls[0]())
            paths[f"workers={server.workers}"] = calls
        warm_s = min(0.5, args.duration / args.rounds)  # interleaved() warms each path first
        before, wall, idle = os.times(), time.perf_counter(), _idle_share()
        trees = {s.workers: _tree_cpu_s(s.process.pid) for s in servers}
        results = interleaved(paths, args.rounds, args.duration / args.rounds)
        after, idle_after = os.times(), _idle_share()
        used = (after.user - before.user) + (after.system - before.system)
        cpu[model.name] = {
            "load generator": used / (time.perf_counter() - wall),
            **{
                f"server workers={n}": (_tree_cpu_s(s.process.pid) - trees[n])
                / (results[f"workers={n}"].elapsed_s + warm_s)
                for n, s in ((s.workers, s) for s in servers)
            },
            "machine idle share": (idle_after[0] - idle[0]) / max(1, idle_after[1] - idle[1]),
        }
        rows += [Row(model.name, path, args.concurrency, r) for path, r in results.items()]
    return rows, cpu


def ratios(rows: list[Row]) -> dict[str, float]:
    """req/s of each N over N=1's, per model."""
    base = {r.model: r.result.throughput for r in rows if r.path == "workers=1"}
    return {
        f"{r.model} {r.path}": r.result.throughput / base[r.model]
        for r in rows
        if r.path != "workers=1" and base.get(r.model)
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per N and model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--loadgen-cpus", default="", help="pin the load generator, e.g. 1")
    parser.add_argument("--server-cpus", default="", help="taskset CPUs of the servers, e.g. 0")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the figures go")
    args = parser.parse_args(argv)
    args.workers = sorted({int(n) for n in args.workers.split(",") if n.strip()} | {1})
    args.rounds = max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    command_line = "python -m bench.workers " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"bench.workers: {os.cpu_count()} CPUs (load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}), N = {args.workers}, "
        f"{args.concurrency} client threads",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        models = write_repository(tmp / "models", 0.0)
        servers = [
            stack.enter_context(workers_server(n, tmp / "models", tmp, args.server_cpus))
            for n in args.workers
        ]
        if args.loadgen_cpus:
            os.sched_setaffinity(0, {int(c) for c in args.loadgen_cpus.split(",")})
        rows, cpu = measure(servers, [models[1], models[0]], args)
    print_table(rows, "req/s against --workers N (same load generator, interleaved)")
    figures = ratios(rows)
    print()
    for label, ratio in figures.items():
        model, path = label.split(" ", 1)
        print(f"ratio {model} {path} / workers=1: {ratio:.2f}x req/s")
    for model, shares in cpu.items():
        parts = ", ".join(
            f"{k} {v:.0%}" if k.endswith("share") else f"{k} {v:.2f} cores"
            for k, v in shares.items()
        )
        print(f"CPU while driving {model}: {parts}")
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
        "cpu_while_driven": cpu,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.json} ({command_line.strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
