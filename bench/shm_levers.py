"""Latency levers side by side: the server as shipped against the same server with one lever.

    python -m bench.shm_levers [--levers fast-inline,inline,switch] [--calls 300] [--seconds 12]
                               [--json PATH]

One server per lever (`bench/shm_levers_launch.py`; `fast-inline` is the opt-in
`batching.inline_max_ms = 1`) plus two as shipped ("base" and "base again": their difference
is this run's noise), all up at once over the benchmark repository.
Then, in one run:

1. seg256 and tiny at concurrency 1: ModelInfer through gRPC bytes and through shared memory,
   call by call in rotating order over every server and in-process `session.run`, so load
   changes hit every path alike; p50 per path and added p50 over in-process.
2. tiny at concurrency 1 and 8 in closed loop, servers in turn: req/s and the server's CPU time
   per request (capacity per core; a loaded machine distorts it less than req/s).

A lever is worth keeping only when it beats both plain servers by more than they differ.
Writes bench/results/shm_levers.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import loadgen
from bench.models import BenchModel, session_call, write_repository
from bench.serving import HOST, free_port, server_process
from bench.shm import ShmClient
from bench.workers import _group_cpu_s

LAUNCH = Path(__file__).resolve().parent / "shm_levers_launch.py"
RESULTS = Path(__file__).resolve().parent / "results" / "shm_levers.json"
PLAIN = ("base", "base again")


def _servers(stack: contextlib.ExitStack, levers: list[str], models: Path, tmp: Path) -> dict:
    servers = {}
    for name in (*PLAIN, *levers):
        port = free_port()
        command = [sys.executable, str(LAUNCH), "serve", "--models", str(models), "--host", HOST]
        command += ["--grpc-port", str(port), "--http-port", "-1", "--log-level", "WARNING"]
        env = {**os.environ, "BENCH_LEVER": "" if name in PLAIN else name}
        log = tmp / f"{name.replace(' ', '-')}.log"
        servers[name] = stack.enter_context(
            server_process(name, command, port, ["seg256", "tiny"], log, env)
        )
    return servers


def latency_c1(model: BenchModel, servers: dict, calls: int, stack) -> dict[str, dict]:
    """p50 per path, call by call in rotating order; added p50 over in-process."""
    session = session_call(model)
    output_bytes = session()[0].nbytes
    paths = {"in-process session.run": session}
    for name, server in servers.items():
        paths[f"{name} bytes"] = loadgen.infer_calls(
            server.address, model.name, "images", model.tensor, 1
        )[0]
        client = ShmClient(server.address, model, output_bytes)
        stack.callback(client.close)
        paths[f"{name} shm"] = client
    names = list(paths)
    for name in names:  # warm-up, and the first run sets each batcher's compute estimate
        for _ in range(20):
            paths[name]()
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for index in range(calls):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            paths[name]()
            latencies[name].append(time.perf_counter() - started)
    base = float(np.percentile(latencies[names[0]], 50)) * 1000.0
    return {
        name: {
            "p50_ms": float(np.percentile(values, 50)) * 1000.0,
            "added_p50_ms": float(np.percentile(values, 50)) * 1000.0 - base,
        }
        for name, values in latencies.items()
    }


def cpu_per_request(model: BenchModel, servers: dict, n: int, seconds: float) -> dict:
    """req/s and server CPU microseconds per request at concurrency `n`, servers in turn."""
    calls = {
        name: loadgen.infer_calls(s.address, model.name, "images", model.tensor, n)
        for name, s in servers.items()
    }
    totals = {name: [0.0, 0, 0.0] for name in servers}
    rounds, order = 4, list(servers)
    for index in range(rounds):
        for name in order if index % 2 == 0 else order[::-1]:
            pid = servers[name].process.pid
            before = _group_cpu_s(pid)
            result = loadgen.closed_loop(calls[name], seconds / rounds)
            totals[name][0] += _group_cpu_s(pid) - before
            totals[name][1] += result.requests
            totals[name][2] += result.elapsed_s
    return {
        name: {"req_s": done / max(1e-9, wall), "cpu_us_per_request": cpu / max(1, done) * 1e6}
        for name, (cpu, done, wall) in totals.items()
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", default="fast-inline,inline,switch", help="comma-separated")
    parser.add_argument("--calls", type=int, default=300, help="c=1 calls per path")
    parser.add_argument("--seconds", type=float, default=12.0, help="closed loop per server")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the figures go")
    args = parser.parse_args(argv)
    args.levers = [lever for lever in args.levers.split(",") if lever.strip()]
    return args


def _print(record: dict) -> None:
    for model, paths in record["latency_c1"].items():
        print(f"\n{model}, concurrency 1 (call by call, rotating order)")
        for name, values in paths.items():
            print(f"  {name:<28} p50 {values['p50_ms']:8.3f} ms  {values['added_p50_ms']:+.3f}")
    for label, servers in record["tiny_closed_loop"].items():
        print(f"\ntiny, {label}")
        base = servers["base"]["cpu_us_per_request"]
        for name, values in servers.items():
            cpu = values["cpu_us_per_request"]
            print(
                f"  {name:<12} {values['req_s']:8.1f} req/s  {cpu:7.0f} us CPU/request "
                f"({cpu / base:.2f}x base)"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    print(f"bench.shm_levers: {os.cpu_count()} CPUs, load average {load_before}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-levers-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        seg, tiny = write_repository(tmp / "models", 0.0)
        servers = _servers(stack, args.levers, tmp / "models", tmp)
        latency = {m.name: latency_c1(m, servers, args.calls, stack) for m in (seg, tiny)}
        closed = {f"c={n}": cpu_per_request(tiny, servers, n, args.seconds) for n in (1, 8)}
    command = "python -m bench.shm_levers " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {
        "command": command.strip(),
        "cpus": os.cpu_count(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "latency_c1": latency,
        "tiny_closed_loop": closed,
    }
    _print(record)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.json} ({command.strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
