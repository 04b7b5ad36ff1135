"""Overload benchmark: capacity, then 5x and 10x of it with 5 s deadlines, on a real server.

    python -m bench.overload [--phase-s 15] [--multiples 5,10] [--soak-minutes 0]
        [--server-cpus 0 --client-cpus 1] [--apis kserve] [--rate-base R] [--server-log PATH]
        [--server-args "--grpc-stream-window 262144"] [--server-env MALLOC_ARENA_MAX=2]
        [--server-tree /tmp/earlier-checkout]

Starts `python -m app serve` on loopback over the bundled blood-cells detector and, for each API
(vision.v1 Detect with a BCCD JPEG, KServe ModelInfer with a raw FP32 tensor):

1. capacity: a closed loop (`--concurrency` callers, each sending when its last call returned)
   for `--phase-s` seconds; its OK answers per second are the sustainable rate;
2. for each multiple: an open loop (arrivals at multiple x capacity, each call with a
   `--deadline-s` deadline, sent whether or not earlier calls returned) for `--phase-s`;
3. recovery, right after the overload stops: the closed loop again, and the time from the end
   of the overload to the first OK answer.

It prints and writes (bench/results/overload.json) goodput as a ratio to capacity, the latency
of shed answers (RESOURCE_EXHAUSTED) and of admitted ones (p50 / p99), the count per status
code, the server's RSS before and after, and the CPU seconds the server and the load generator
spent in each phase (`cpu_s`: per answer, the machine's other load does not distort them as it
does wall-clock goodput). With `--soak-minutes M` it then offers 80 % of the Detect capacity for
M minutes and records RSS and latency per interval. The client runs on the same machine as the
server, so both share its cores unless `--server-cpus` / `--client-cpus` pin them apart
(`taskset` lists): the figures are for this machine. What one refusal costs is measured on its
own by `python -m bench.shed_cost`. `--rate-base R` offers the multiples of R req/s instead of
the capacity just measured (the same load in every run on a machine whose other load varies);
`--server-log PATH` keeps the server's output and counts its ERROR lines per overload phase.
The server's RSS is sampled every 20 ms during each phase (`rss_mb_peak`) and read after it
(`rss_mb_at_end`); `--server-args` adds `vision serve` flags, `--server-env` sets its
environment (glibc's `MALLOC_ARENA_MAX`, ...), and `--server-tree` runs the server of another
checkout (an earlier commit's `git worktree`) under this harness, for before / after figures.
`--multiples ''` measures capacity (and its memory) only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from protos.inference import grpc_service_pb2 as kserve_pb
from protos.vision.v1 import vision_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "overload.json"
MODEL = "blood-cells"
DETECT = "/vision.v1.VisionService/Detect"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
DEFAULT_IMAGE = Path("/work/shared/datasets/bccd/BCCD/JPEGImages/BloodImage_00000.jpg")
START_TIMEOUT_S = 180.0
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class Phase:
    """What one phase of load saw: each answer's status code and latency, over `seconds`."""

    name: str
    seconds: float = 0.0
    answers: list[tuple[str, float, float]] = field(default_factory=list)  # code, latency, end
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds: server, client
    threads: dict[str, float] = field(default_factory=dict)  # server CPU s per thread name
    rss_mb_peak: float = 0.0  # the server's highest RSS sampled during the phase

    def latencies(self, code: str) -> list[float]:
        """Latencies (s) of the answers with status `code`."""
        return [t for c, t, _ in self.answers if c == code]

    def rate(self, code: str = "OK") -> float:
        """Answers with `code` that came back within the phase, per second."""
        within = [c for c, _, end in self.answers if c == code and end <= self.seconds]
        return len(within) / self.seconds if self.seconds else 0.0

    def summary(self, capacity: float) -> dict:
        """The phase as JSON: goodput and its ratio to capacity, latencies, codes."""
        ok, shed = self.latencies("OK"), self.latencies("RESOURCE_EXHAUSTED")
        return {
            "phase": self.name,
            "seconds": round(self.seconds, 2),
            "offered": len(self.answers),
            "goodput_per_s": round(self.rate(), 2),
            "goodput_ratio": round(self.rate() / capacity, 3) if capacity else None,
            "admitted_ms": _percentiles(ok),
            "shed_ms": _percentiles(shed),
            "codes": dict(Counter(c for c, _, _ in self.answers)),
            "cpu_s": {k: round(v, 2) for k, v in self.cpu.items()},
            "server_thread_cpu_s": {k: round(v, 2) for k, v in self.threads.items() if v >= 0.01},
            "rss_mb_peak": round(self.rss_mb_peak, 1),
        }


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    ms = np.asarray(values) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "n": len(values),
    }


def detect_payload(image: Path) -> bytes:
    """A serialized Detect request carrying the JPEG's bytes."""
    request = pb.DetectRequest(
        model=pb.ModelRef(name=MODEL), image=pb.ImageInput(encoded=image.read_bytes())
    )
    return request.SerializeToString()


def infer_payload() -> bytes:
    """A serialized ModelInfer request: one FP32 image tensor the size of the detector's input."""
    tensor = kserve_pb.ModelInferRequest.InferInputTensor(
        name="images", datatype="FP32", shape=[1, 3, 416, 416]
    )
    rng = np.random.default_rng(0)
    raw = rng.random((1, 3, 416, 416), dtype=np.float32).tobytes()
    request = kserve_pb.ModelInferRequest(
        model_name=MODEL, inputs=[tensor], raw_input_contents=[raw]
    )
    return request.SerializeToString()


async def _call(
    channel: grpc.aio.Channel, method: str, payload: bytes, timeout: float, since: float
) -> tuple[str, float, float]:
    """One call: its status code, latency, and when it ended (s after `since`)."""
    start = time.perf_counter()
    try:
        await channel.unary_unary(method)(payload, timeout=timeout)
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    end = time.perf_counter()
    return code, end - start, end - since


async def closed_loop(
    address: str, method: str, payload: bytes, concurrency: int, seconds: float, name: str
) -> Phase:
    """`concurrency` callers, each sending its next call when the last returned."""
    phase = Phase(name)
    async with _channel(address) as channel:
        start = time.perf_counter()
        end = start + seconds

        async def caller() -> None:
            while time.perf_counter() < end:
                phase.answers.append(await _call(channel, method, payload, 60.0, start))

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        phase.seconds = time.perf_counter() - start
    return phase


async def open_loop(
    address: str,
    method: str,
    payload: bytes,
    rate: float,
    seconds: float,
    deadline_s: float,
    name: str,
) -> Phase:
    """Calls at `rate` per second for `seconds` (evenly spaced), each with `deadline_s`; waits
    for every answer. Goodput counts OK answers over the offered interval."""
    phase = Phase(name)
    async with _channel(address) as channel:
        tasks: list[asyncio.Task] = []
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) * rate) + 1
            for _ in range(due - sent):
                call = _call(channel, method, payload, deadline_s, start)
                tasks.append(asyncio.create_task(call))
            sent = max(sent, due)
            await asyncio.sleep(0.001)
        phase.answers = list(await asyncio.gather(*tasks))
        phase.seconds = seconds
    return phase


@contextlib.asynccontextmanager
async def _channel(address: str):
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    channel = grpc.aio.insecure_channel(address, options=options)
    try:
        await asyncio.wait_for(channel.channel_ready(), START_TIMEOUT_S)
        yield channel
    finally:
        await channel.close()


async def first_ok_after(address: str, method: str, payload: bytes) -> float:
    """Seconds until a call (sent one after another) is answered OK."""
    start = time.perf_counter()
    async with _channel(address) as channel:
        while True:
            code, _, _ = await _call(channel, method, payload, 30.0, start)
            if code == "OK":
                return time.perf_counter() - start


SERVER_COUNTERS = {
    "refused_overloaded": ("vision_request_failures_total{", 'error="OverloadedError"'),
    "abandoned_deadline": ("vision_requests_abandoned_total{", 'reason="deadline"'),
    "abandoned_cancelled": ("vision_requests_abandoned_total{", 'reason="cancelled"'),
    "served_ok": ("vision_requests_total{", 'outcome="ok"'),
}


def server_counters(http_port: int) -> dict[str, float]:
    """The server's own counts (all APIs) from /metrics: refusals, abandoned calls, served."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as reply:
        lines = reply.read().decode().splitlines()
    return {
        key: sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(name) and part in x)
        for key, (name, part) in SERVER_COUNTERS.items()
    }


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds process `pid` (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def with_cpu(pid: int, load) -> Phase:
    """Run the phase `load` (a coroutine) and record the CPU seconds the server and this
    client used meanwhile (a cost per answer that the machine's other load does not distort
    as it does wall-clock goodput) and the server's peak RSS."""
    server, client, threads = cpu_s(pid), time.process_time(), thread_cpu_s(pid)
    with RssPeak(pid) as peak:
        phase = await load
    phase.cpu = {"server": cpu_s(pid) - server, "client": time.process_time() - client}
    after = thread_cpu_s(pid)
    phase.threads = {k: v - threads.get(k, 0.0) for k, v in sorted(after.items())}
    phase.rss_mb_peak = peak.mb
    return phase


class RssPeak:
    """The highest RSS of process `pid` while the `with` block runs, sampled by a thread
    every `interval_s` (the load generator's event loop keeps running meanwhile)."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        """Sample process `pid` every `interval_s` seconds once entered."""
        self.pid, self.interval_s, self.mb = pid, interval_s, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.mb = max(self.mb, rss_mb(self.pid))
            if self._done.wait(self.interval_s):
                return

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.mb = max(self.mb, rss_mb(self.pid))


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed) of process `pid` so far; its
    main thread (the asyncio event loop of `vision serve`) is `main`."""
    times: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        times[name] = times.get(name, 0.0) + seconds
    return times


def pin_threads(pid: int, cpus: str) -> None:
    """Pin every thread of `pid` to `cpus` (taskset syntax). `taskset` at the start is not
    enough: onnxruntime sets its own affinity on its intra-op threads when a session is made
    (seen: two threads of a server started under `taskset -c 0` on CPU 1), so a pinned server
    would otherwise compute on the load generator's core too."""
    if cpus:
        subprocess.run(
            ["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True
        )


def rss_mb(pid: int) -> float:
    """The resident set size of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_log_errors(log: Path | None) -> int:
    """ERROR lines in the server's log so far (0 without a log)."""
    if log is None or not log.is_file():
        return 0
    with log.open(errors="replace") as lines:
        return sum(1 for line in lines if " ERROR " in line)


@dataclass(frozen=True)
class ServerSetup:
    """How `served` starts `vision serve`: more flags, environment, and the checkout."""

    args: tuple[str, ...] = ()  # more `vision serve` flags
    env: tuple[tuple[str, str], ...] = ()  # more environment variables
    tree: Path = ROOT  # the checkout whose `python -m app` runs (its own code)


@contextlib.contextmanager
def served(
    models: Path,
    cpus: str = "",
    max_concurrent_rpcs: int = 0,
    log: Path | None = None,
    setup: ServerSetup = ServerSetup(),
) -> Iterator[tuple[str, int, int]]:
    """`python -m app serve` over `models` on loopback (on `cpus` when given, `taskset`
    syntax; with `--grpc-max-concurrent-rpcs` when `max_concurrent_rpcs`; its output to `log`
    when given; flags, environment and checkout from `setup`); yields (gRPC address, pid, HTTP
    port); SIGTERM at exit."""
    port, http_port = _free_port(), _free_port()
    pinned = ["taskset", "-c", cpus] if cpus else []
    command = [
        *pinned,
        sys.executable,
        "-m",
        "app",
        "serve",
        "--models",
        str(models),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(port),
        "--http-port",
        str(http_port),
        "--log-level",
        "WARNING",
    ]
    if max_concurrent_rpcs:
        command += ["--grpc-max-concurrent-rpcs", str(max_concurrent_rpcs)]
    command += setup.args
    env = {k: v for k, v in os.environ.items() if k != "VISION_API_KEY"} | dict(setup.env)
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("w")) if log is not None else None
        proc = subprocess.Popen(command, cwd=setup.tree, env=env, stdout=out, stderr=out)
        try:
            yield f"127.0.0.1:{port}", proc.pid, http_port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def repository(tmp: Path) -> Path:
    """A repository holding only the bundled blood-cells detector (a link to it)."""
    models = tmp / "models"
    models.mkdir()
    (models / MODEL).symlink_to(ROOT / "models" / MODEL)
    return models


async def measure_api(
    server: tuple[str, int, int],
    api: str,
    method: str,
    payload: bytes,
    args: argparse.Namespace,
    log: Path | None = None,
) -> dict:
    """Capacity, each overload multiple with its recovery, and RSS, for one API (`log`: the
    server's log, whose ERROR lines each overload phase counts)."""
    address, pid, http_port = server
    await first_ok_after(address, method, payload)  # serving: its sessions are made
    rss_start = rss_mb(pid)
    with RssPeak(pid) as warm_up_peak:
        await closed_loop(address, method, payload, args.concurrency, 3.0, "warm-up")
    pin_threads(pid, args.server_cpus)  # after the model's sessions made their threads
    rss_before = rss_mb(pid)
    capacity = await with_cpu(
        pid, closed_loop(address, method, payload, args.concurrency, args.phase_s, "capacity")
    )
    cap = capacity.rate()
    print(f"{api}: capacity {cap:.1f} req/s (closed loop, {args.concurrency} callers)", flush=True)
    base = args.rate_base or cap
    phases = [capacity.summary(cap)]
    for multiple in args.multiples:
        counted, errors_before = server_counters(http_port), server_log_errors(log)
        over = await with_cpu(
            pid,
            open_loop(
                address,
                method,
                payload,
                multiple * base,
                args.phase_s,
                args.deadline_s,
                f"{multiple}x",
            ),
        )
        overload_end = time.perf_counter()
        rss_end = rss_mb(pid)
        first_ok = await first_ok_after(address, method, payload)
        recovery = await closed_loop(
            address, method, payload, args.concurrency, min(5.0, args.phase_s), f"after {multiple}x"
        )
        row = over.summary(cap) | {
            "rate_per_s": round(multiple * base, 1),
            "rss_mb_at_end": round(rss_end, 1),
            "server_log_errors": server_log_errors(log) - errors_before,
        }
        row["server_counts"] = _delta(server_counters(http_port), counted)
        row["recovery"] = recovery.summary(cap) | {
            "first_ok_s": round(first_ok, 3),
            "since_overload_end_s": round(time.perf_counter() - overload_end, 2),
        }
        phases.append(row)
        _print_overload(api, multiple, row)
    return {
        "api": api,
        "capacity_per_s": round(cap, 2),
        "rate_base_per_s": round(base, 2),
        "rss_mb_at_start": round(rss_start, 1),  # after the first answered call
        "rss_mb_warm_up_peak": round(warm_up_peak.mb, 1),
        "rss_mb_before": round(rss_before, 1),  # after the 3 s warm-up
        "rss_mb_after": round(rss_mb(pid), 1),
        "phases": phases,
    }


def _print_overload(api: str, multiple: float, row: dict) -> None:
    shed, recovery = row["shed_ms"], row["recovery"]
    print(
        f"{api} {multiple}x: goodput {row['goodput_per_s']} req/s = {row['goodput_ratio']} of "
        f"capacity; shed p50/p99 {shed['p50']}/{shed['p99']} ms; admitted p99 "
        f"{row['admitted_ms']['p99']} ms; codes {row['codes']}; after: goodput ratio "
        f"{recovery['goodput_ratio']}, first OK {recovery['first_ok_s']} s; server counted "
        f"{row['server_counts']}; ERROR lines in the server log {row['server_log_errors']}",
        flush=True,
    )


async def soak(
    server: tuple[str, int, int],
    payload: bytes,
    capacity: float,
    minutes: float,
    interval_s: float,
    deadline_s: float,
) -> list[dict]:
    """80 % of the Detect capacity for `minutes`, one row per interval: RSS, goodput, latency."""
    address, pid, http_port = server
    rows = []
    end = time.perf_counter() + minutes * 60.0
    while time.perf_counter() < end:
        counted = server_counters(http_port)
        phase = await open_loop(
            address, DETECT, payload, 0.8 * capacity, interval_s, deadline_s, "soak"
        )
        row = phase.summary(capacity) | {
            "rss_mb": round(rss_mb(pid), 1),
            "elapsed_min": round(minutes - (end - time.perf_counter()) / 60.0, 2),
            "server_counts": _delta(server_counters(http_port), counted),
        }
        rows.append(row)
        admitted = row["admitted_ms"]
        print(
            f"soak {row['elapsed_min']:.1f} min: RSS {row['rss_mb']} MiB, goodput ratio "
            f"{row['goodput_ratio']}, admitted p50/p99 {admitted['p50']}/{admitted['p99']} ms, "
            f"codes {row['codes']}; server counted {row['server_counts']}",
            flush=True,
        )
    return rows


async def run(args: argparse.Namespace) -> dict:
    """Every measurement, on one server. SIGTERM cancels it, so the server is stopped too (a
    killed bench used to leave its `vision serve` running)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    log = args.server_log
    setup = ServerSetup(
        tuple(args.server_args.split()),
        tuple(tuple(kv.split("=", 1)) for kv in args.server_env),
        args.server_tree,
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        served(
            repository(Path(tmp)), args.server_cpus, args.grpc_max_concurrent_rpcs, log, setup
        ) as server,
    ):
        address, pid, _ = server
        apis = [
            ("vision.v1 Detect (JPEG)", DETECT, detect_payload(args.image)),
            ("KServe ModelInfer", MODEL_INFER, infer_payload()),
        ]
        results = [
            await measure_api(server, name, method, payload, args, log)
            for name, method, payload in apis
            if name.split()[0].lower().startswith(tuple(args.apis))
        ]
        report = {
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0],
                "server_cpus": args.server_cpus or "all",
                "client_cpus": args.client_cpus or "all",
            },
            "model": MODEL,
            "server": {
                "args": list(setup.args),
                "env": dict(setup.env),
                "tree": str(setup.tree),
                "checkout": _commit(setup.tree),
            },
            "deadline_s": args.deadline_s,
            "apis": results,
        }
        if args.soak_minutes > 0 and results:
            capacity = results[0]["capacity_per_s"]
            report["soak"] = {
                "minutes": args.soak_minutes,
                "rate_per_s": round(0.8 * capacity, 2),
                "rows": await soak(
                    server,
                    apis[0][2],
                    capacity,
                    args.soak_minutes,
                    args.soak_interval_s,
                    args.deadline_s,
                ),
            }
        return report


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(
        prog="python -m bench.overload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the JPEG Detect sends")
    p.add_argument("--phase-s", type=float, default=15.0, help="seconds per phase")
    p.add_argument(
        "--multiples",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[5.0, 10.0],
        help="overload phases as multiples of capacity ('': capacity only)",
    )
    p.add_argument("--deadline-s", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32, help="callers of the closed loops")
    p.add_argument(
        "--apis",
        type=lambda s: s.split(","),
        default=["vision.v1", "kserve"],
        help="vision.v1,kserve",
    )
    p.add_argument(
        "--soak-minutes", type=float, default=0.0, help="then 80 %% of capacity for M minutes"
    )
    p.add_argument("--soak-interval-s", type=float, default=30.0)
    p.add_argument("--server-cpus", default="", help="pin the server (taskset -c syntax: 0 or 0-1)")
    p.add_argument("--client-cpus", default="", help="pin this load generator (e.g. 1)")
    p.add_argument(
        "--grpc-max-concurrent-rpcs",
        type=int,
        default=0,
        help="serve with grpc.aio's own limit (opt-in lever; 0 off)",
    )
    p.add_argument(
        "--rate-base",
        type=float,
        default=0.0,
        help="offer the multiples of this rate (req/s) instead of the capacity just measured, "
        "so that runs on a machine whose other load varies offer the same load",
    )
    p.add_argument(
        "--server-log",
        type=Path,
        default=None,
        help="write the server's output here (each overload phase counts its ERROR lines)",
    )
    p.add_argument("--server-args", default="", help="more `vision serve` flags, one string")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        type=_assignment,
        help="KEY=VALUE in the server's environment (repeatable)",
    )
    p.add_argument(
        "--server-tree",
        type=Path,
        default=ROOT,
        help="run the server of this checkout (e.g. a git worktree of an earlier commit)",
    )
    p.add_argument("--output", type=Path, default=RESULTS)
    return p


def _assignment(text: str) -> str:
    """A KEY=VALUE argument, checked."""
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def _commit(tree: Path) -> dict:
    """The commit checked out at `tree` and the tracked files changed there since."""

    def git(*args: str) -> list[str]:
        done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True)
        return done.stdout.split()

    return {
        "head": "".join(git("rev-parse", "--short", "HEAD")),
        "changed": git("diff", "--name-only", "HEAD"),
    }


def _cpu_list(spec: str) -> set[int]:
    """CPU numbers from taskset's list syntax ("1", "0-1", "0,2")."""
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write the JSON report."""
    args = build_parser().parse_args(argv)
    if not args.image.is_file():
        print(f"no image at {args.image}: pass --image with a BCCD JPEG", file=sys.stderr)
        return 2
    if args.client_cpus:
        os.sched_setaffinity(0, _cpu_list(args.client_cpus))
    try:
        report = asyncio.run(run(args))
    except asyncio.CancelledError:
        print("stopped by SIGTERM; the server was stopped", file=sys.stderr)
        return 143
    report["command"] = "python -m bench.overload " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    from vision.reports import write_json  # matplotlib: only when a report is written

    print(f"wrote {write_json(report, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
