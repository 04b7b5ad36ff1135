"""The transport's ceiling for shedding: a bare grpc.aio server that refuses every call at once.

    python -m bench.overload_ceiling [--server-cpus 0 --client-cpus 1] [--phase-s 5]
        [--rates detect=580,kserve=540] [--modes unary,early] [--window BYTES]

Issue 18 asks that at 10x the sustainable rate the server shed at once (RESOURCE_EXHAUSTED in
under 5 ms). Whether that is possible at all on a machine depends first on gRPC itself: how many
calls per second, carrying the API's request message, a grpc.aio server on one core can receive
and refuse. This bench starts such a server (in a child process, pinned with `taskset` like
`bench.overload --server-cpus`), with the same message-size options as `vision serve`, that
does no work: every call to the Detect or ModelInfer path is answered RESOURCE_EXHAUSTED with
a `grpc-retry-pushback-ms` trailer, as the real server's refusals are. The server mode is
either

- `unary`: a unary-unary handler without deserializer (gRPC has received the whole message and
  handed it over as bytes: the floor of the real servicers, which refuse after the message);
- `early`: a stream-unary handler that refuses before reading the message (gRPC calls it once
  the headers are in; the refusal ends the stream and the client's upload, RST_STREAM).

It is driven by the same open-loop load generator as `bench.overload` (its `open_loop`,
`closed_loop` and request messages: the BCCD JPEG Detect request and the 2 MB FP32 ModelInfer
request), in this process (pinned with `--client-cpus`). For each API and mode it runs an open
loop at the given rate (the 10x of `bench/results/overload-*.json` by default) and a closed
loop (`--concurrency` callers) for the most refusals per second, and prints refusals/s, shed
latency p50/p99, server and client CPU per call and the request bytes per second refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from bench.loadgen import MAX_MESSAGE_BYTES, check_loopback
from bench.overload import (
    DEFAULT_IMAGE,
    DETECT,
    MODEL_INFER,
    Phase,
    _cpu_list,
    _free_port,
    _percentiles,
    closed_loop,
    cpu_s,
    detect_payload,
    infer_payload,
    open_loop,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "overload-ceiling.json"
PUSHBACK = (("grpc-retry-pushback-ms", "10"),)
REFUSAL = "refused by the bare ceiling server"
MODES = ("unary", "early")
DEFAULT_RATES = {"detect": 580.0, "kserve": 540.0}  # 10x overload-quiet.json's capacities


async def _refuse(context: grpc.aio.ServicerContext) -> None:
    context.set_trailing_metadata(PUSHBACK)
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSAL)


async def _refuse_unary(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await _refuse(context)


async def _refuse_early(requests, context: grpc.aio.ServicerContext) -> None:
    await _refuse(context)


def _handler(mode: str) -> grpc.GenericRpcHandler:
    if mode == "unary":
        method = grpc.unary_unary_rpc_method_handler(_refuse_unary)
    else:
        method = grpc.stream_unary_rpc_method_handler(_refuse_early)

    class Refuser(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return method if details.method in (DETECT, MODEL_INFER) else None

    return Refuser()


def window_options(window: int) -> list[tuple[str, int]]:
    """Channel arguments that hold each stream's HTTP/2 receive window at `window` bytes (BDP
    probing off, which would grow it); none for 0 (gRPC's defaults)."""
    if window <= 0:
        return []
    return [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", window)]


async def serve(port: int, mode: str, window: int = 0) -> None:
    """A grpc.aio server on loopback `port` that refuses every Detect and ModelInfer call
    (`window`: see `window_options`)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            *window_options(window),
        ]
    )
    server.add_generic_rpc_handlers((_handler(mode),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


@contextlib.contextmanager
def bare_server(mode: str, cpus: str, window: int = 0) -> Iterator[tuple[str, int]]:
    """This module's server in a child process (on `cpus`); yields (address, pid)."""
    port = _free_port()
    pinned = ["taskset", "-c", cpus] if cpus else []
    command = [*pinned, sys.executable, "-m", "bench.overload_ceiling", "--serve", str(port)]
    command += ["--window", str(window)]
    proc = subprocess.Popen([*command, "--modes", mode], cwd=ROOT)
    try:
        yield check_loopback(f"127.0.0.1:{port}"), proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _measured(pid: int, load) -> Phase:
    server, client = cpu_s(pid), time.process_time()
    phase = await load
    phase.cpu = {"server": cpu_s(pid) - server, "client": time.process_time() - client}
    return phase


def _row(phase: Phase, payload: int) -> dict:
    refused = phase.latencies("RESOURCE_EXHAUSTED")
    answered = len(phase.answers) or 1
    rate = phase.rate("RESOURCE_EXHAUSTED")
    return {
        "phase": phase.name,
        "seconds": round(phase.seconds, 2),
        "offered": len(phase.answers),
        "refused_per_s": round(rate, 1),
        "shed_ms": _percentiles(refused),
        "codes": {
            c: sum(1 for a in phase.answers if a[0] == c) for c in {a[0] for a in phase.answers}
        },
        "server_cpu_ms_per_call": round(1000.0 * phase.cpu["server"] / answered, 3),
        "client_cpu_ms_per_call": round(1000.0 * phase.cpu["client"] / answered, 3),
        "server_cpu_share": round(phase.cpu["server"] / phase.seconds, 2)
        if phase.seconds
        else None,
        "request_mb_per_s": round(rate * payload / 1e6, 1),
    }


async def measure(mode: str, api: str, method: str, payload: bytes, args) -> list[dict]:
    """Open loop at the API's rate, then a closed loop, against a fresh bare server."""
    rate = args.rates[api]
    with bare_server(mode, args.server_cpus, args.window) as (address, pid):
        await closed_loop(address, method, payload, 4, 1.0, "warm-up")
        over = await _measured(
            pid, open_loop(address, method, payload, rate, args.phase_s, args.deadline_s, "open")
        )
        closed = await _measured(
            pid, closed_loop(address, method, payload, args.concurrency, args.phase_s, "closed")
        )
    rows = []
    for phase, label in ((over, f"open {rate:g}/s"), (closed, f"closed c={args.concurrency}")):
        row = {"mode": mode, "api": api, "bytes": len(payload), "window": args.window}
        row |= _row(phase, len(payload))
        row["phase"] = label
        rows.append(row)
        print(
            f"{mode:5} {api:6} {label:14}: {row['refused_per_s']} refused/s, shed p50/p99 "
            f"{row['shed_ms']['p50']}/{row['shed_ms']['p99']} ms, server CPU "
            f"{row['server_cpu_ms_per_call']} ms/call ({row['server_cpu_share']} of a core), "
            f"client {row['client_cpu_ms_per_call']} ms/call, {row['request_mb_per_s']} MB/s "
            f"refused, codes {row['codes']}",
            flush=True,
        )
    return rows


async def run(args: argparse.Namespace) -> dict:
    """Every mode and API."""
    payloads = {
        "detect": (DETECT, detect_payload(args.image)),
        "kserve": (MODEL_INFER, infer_payload()),
    }
    rows = []
    for mode in args.modes:
        for api in args.apis:
            method, payload = payloads[api]
            rows += await measure(mode, api, method, payload, args)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "server_cpus": args.server_cpus or "all",
            "client_cpus": args.client_cpus or "all",
        },
        "deadline_s": args.deadline_s,
        "rows": rows,
    }


def _rates(spec: str) -> dict[str, float]:
    rates = dict(DEFAULT_RATES)
    for part in filter(None, spec.split(",")):
        api, _, value = part.partition("=")
        rates[api] = float(value)
    return rates


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(
        prog="python -m bench.overload_ceiling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the JPEG Detect sends")
    p.add_argument("--phase-s", type=float, default=5.0, help="seconds per phase")
    p.add_argument("--rates", type=_rates, default=dict(DEFAULT_RATES), help="detect=R,kserve=R")
    p.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="unary,early")
    p.add_argument("--apis", type=lambda s: s.split(","), default=["detect", "kserve"])
    p.add_argument("--deadline-s", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32, help="callers of the closed loop")
    p.add_argument("--server-cpus", default="", help="pin the bare server (taskset -c syntax)")
    p.add_argument("--client-cpus", default="", help="pin this load generator (e.g. 1)")
    p.add_argument(
        "--window",
        type=int,
        default=0,
        help="hold the server's HTTP/2 stream window at this many bytes (BDP probing off; "
        "0: gRPC's defaults)",
    )
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --serve PORT, be its server); write the JSON report."""
    args = build_parser().parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.modes[0], args.window))
        return 0
    if args.client_cpus:
        os.sched_setaffinity(0, _cpu_list(args.client_cpus))
    report = asyncio.run(run(args))
    report["command"] = "python -m bench.overload_ceiling " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    from vision.reports import write_json  # matplotlib: only when a report is written

    print(f"wrote {write_json(report, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
