"""What a refused call costs the server: CPU per RESOURCE_EXHAUSTED / 429, per API and lever.

    python -m bench.shed_cost [--calls 400] [--concurrency 8]

Goodput under overload is what the server's cores have left after refusing the excess, so the
cost of one refusal decides it: at 10x a model's capacity C, nine refusals arrive for every
request served, and goodput / capacity is about 1 - 9 C x (CPU per refusal) / cores. This bench
measures that cost directly, as CPU time (the machine's other load does not change it, unlike
wall-clock goodput): an in-process server over the bundled blood-cells detector has its model
runs held and its admission gate filled, so that every further call is refused; a client in
another process then sends `--calls` calls of each API (vision.v1 Detect with a BCCD JPEG,
KServe ModelInfer with a 2 MB FP32 tensor, KServe REST /infer with the same tensor as JSON)
and the server process's CPU time is divided by the calls. Each lever runs on a fresh server:

- `gate`: the admission gate alone (refused in the servicer, after the message was read);
- `limiter`: grpc.aio's `maximum_concurrent_rpcs` set to the held calls, so every new call is
  refused by gRPC's own loop before its message is read or any Python handler runs;
- `limiter+window`: the same with a 64 KiB HTTP/2 stream window and no BDP probing, so a refused
  request's body is not uploaded past the window.

The client's CPU per call is printed too: on one machine both share the cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import yaml

from bench.overload import DEFAULT_IMAGE, DETECT, MODEL, MODEL_INFER, detect_payload, infer_payload
from bench.overload import repository as bench_repository

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "shed-cost.json"
WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 65536)]
IDLE_S = 3.0
LEVERS = {
    "gate": (False, []),
    "window": (False, WINDOW),
    "limiter": (True, []),
    "limiter+window": (True, WINDOW),
}


def _rest_body() -> bytes:
    values = np.random.default_rng(0).random(3 * 416 * 416, dtype=np.float32)
    tensor = {"name": "images", "datatype": "FP32", "shape": [1, 3, 416, 416]}
    return json.dumps({"inputs": [tensor | {"data": values.round(4).tolist()}]}).encode()


def _grpc_calls(address: str, method: str, payload: bytes, calls: int, threads: int) -> dict:
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(address, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        call = channel.unary_unary(method)

        def one(_: int) -> tuple[str, float]:
            start = time.perf_counter()
            try:
                call(payload, timeout=30)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            return code, time.perf_counter() - start

        return _run(one, calls, threads)


def _rest_calls(http_port: int, body: bytes, calls: int, threads: int) -> dict:
    url = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/infer"

    def one(_: int) -> tuple[str, float]:
        start = time.perf_counter()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                code = str(reply.status)
        except urllib.error.HTTPError as exc:
            code = str(exc.code)
        return code, time.perf_counter() - start

    return _run(one, calls, threads)


def _rest_expect_calls(http_port: int, body: bytes, calls: int, threads: int) -> dict:
    """REST calls that send `Expect: 100-continue` and their body only when told to (as curl
    does for large bodies): a refused one never uploads it."""
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()

    def one(_: int) -> tuple[str, float]:
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", http_port), timeout=30) as sock:
            sock.sendall(head)
            status = sock.recv(65536).split(b" ", 2)[1].decode()
            if status == "100":
                sock.sendall(body)
                status = sock.recv(65536).split(b" ", 2)[1].decode()
        return status, time.perf_counter() - start

    return _run(one, calls, threads)


def _run(one, calls: int, threads: int) -> dict:
    cpu = time.process_time()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(one, range(calls)))
    ms = np.asarray([t for _, t in answers]) * 1000.0
    return {
        "codes": dict(Counter(c for c, _ in answers)),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 2),
            "p99": round(float(np.percentile(ms, 99)), 2),
        },
        "client_cpu_ms_per_call": round((time.process_time() - cpu) * 1000.0 / calls, 3),
    }


def client(args: argparse.Namespace) -> int:
    """The client process: one API's calls; prints what it saw as JSON."""
    if args.api == "rest":
        seen = _rest_calls(args.http_port, _rest_body(), args.calls, args.concurrency)
    elif args.api == "rest-expect":
        seen = _rest_expect_calls(args.http_port, _rest_body(), args.calls, args.concurrency)
    else:
        method, payload = {
            "detect": (DETECT, detect_payload(args.image)),
            "infer": (MODEL_INFER, infer_payload()),
        }[args.api]
        seen = _grpc_calls(args.address, method, payload, args.calls, args.concurrency)
    print(json.dumps(seen))
    return 0


def _server_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(running, api: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, "-m", "bench.shed_cost", "--client", api,
        "--address", running.address, "--http-port", str(running.server.http_port),
        "--calls", str(args.calls), "--concurrency", str(args.concurrency),
        "--image", str(args.image),
    ]  # fmt: skip
    idle = _server_cpu_s()
    time.sleep(IDLE_S)
    idle_rate = (_server_cpu_s() - idle) / IDLE_S  # what the idle server spends, subtracted
    before, start = _server_cpu_s(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the {api} client failed: {done.stderr[-2000:]}")
    spent = _server_cpu_s() - before - idle_rate * (time.perf_counter() - start)
    return json.loads(done.stdout) | {
        "server_cpu_ms_per_call": round(spent * 1000.0 / args.calls, 3),
        "server_idle_cpu_share": round(idle_rate, 3),
    }


def lever(name: str, tmp: Path, args: argparse.Namespace) -> dict:
    """One server with lever `name`: fill the gate, then every API's refused calls."""
    from app import server as app_server
    from serving.config import ServerConfig
    from serving.rpc.server import build_grpc_server
    from tests.faults.helpers import HeldRuns, admitted, wait_for
    from tests.serving.conftest import ServerThread

    limited, options = LEVERS[name]
    batching = yaml.safe_load((ROOT / "models" / MODEL / "config.yaml").read_text())["batching"]
    limit = batching["max_queue_size"] + batching["max_batch_size"]  # the gate's tickets
    # The levers are not shipped: the composition root builds this server with them.
    app_server.build_grpc_server = build_grpc_server
    if limited or options:
        app_server.build_grpc_server = functools.partial(
            build_grpc_server, options=options, maximum_concurrent_rpcs=limit if limited else None
        )
    models = bench_repository(tmp)
    config = replace(
        ServerConfig(), models=models, host="127.0.0.1", grpc_port=0, http_port=0,
        drain_timeout_s=5.0,
    )  # fmt: skip
    running = ServerThread(config).start()
    held = HeldRuns(running, MODEL)
    fillers = concurrent.futures.ThreadPoolExecutor(limit)
    try:
        with grpc.insecure_channel(running.address) as channel:
            call = channel.unary_unary(DETECT)
            payload = detect_payload(args.image)
            pending = [fillers.submit(call, payload, timeout=120) for _ in range(limit)]
            wait_for(lambda: admitted(running, MODEL) == limit, "a full gate", 120)
            batcher = running.server.repository.get(MODEL).batcher
            queue = batching["max_queue_size"]
            wait_for(lambda: batcher.depth >= queue, "every held call decoded and queued", 120)
            rows = {api: _measure(running, api, args) for api in args.apis.split(",")}
            held.release()
            concurrent.futures.wait(pending, timeout=120)
    finally:
        held.release()
        fillers.shutdown(wait=False)
        running.stop()
    return {"lever": name, "limited": limited, "options": options, "held": limit, "apis": rows}


def main(argv: list[str] | None = None) -> int:
    """Measure each lever; write the JSON report."""
    p = argparse.ArgumentParser(prog="python -m bench.shed_cost", description=__doc__)
    p.add_argument("--calls", type=int, default=400, help="refused calls per API and lever")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--levers", default=",".join(LEVERS), help=",".join(LEVERS))
    p.add_argument(
        "--apis", default="detect,infer,rest,rest-expect", help="detect,infer,rest,rest-expect"
    )
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--client", dest="api", help=argparse.SUPPRESS)
    p.add_argument("--address", help=argparse.SUPPRESS)
    p.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.api:
        return client(args)
    rows = []
    for name in args.levers.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(lever(name, Path(tmp), args))
        for api, seen in rows[-1]["apis"].items():
            print(f"{name:15} {api:6} {json.dumps(seen)}", flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "levers": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
