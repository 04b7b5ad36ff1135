"""Cold start and memory of `vision serve` over a model repository (default: the bundled one).

Each run spawns `python -m app serve --host 127.0.0.1` with both ports on free loopback ports (the
HTTP app too, as `vision serve` runs by default; `--no-http` leaves it off) in its own process
group and times, from just before the spawn:

- `serving`: gRPC health `Check("")` answers SERVING;
- `ready`: ServerReady true and ModelReady true for every model folder on disk;
- `explainable`: vision.v1 metadata says `explainable` for every model whose config names an
  explain graph (those load in the background after the plain model is READY);

and reads the process group's RSS (VmRSS) and CPU seconds at SERVING, when every model is READY
and once explain graphs are in. `--runs` runs (default 3), medians printed. `--baseline TREE`
starts another checkout's server in turn with ours (interleaved, same load) and prints the
ratios. `--first-request` adds, once explain graphs are in, the first and second `Segment` of a
PNG and of a DICOM image (`bench/coldstart_requests.py`: what a lazily imported module costs
the first request that needs it) and the RSS after them. `--importtime` adds `python -X
importtime` of the same start (top cumulative imports); `--profile` adds an in-process
per-model load profile (config, session, explain session, parity check, warm-up per shape).

Before the runs each tree's packages are byte-compiled (`compileall`), as `pip install` does
for an installed server: a checkout run with PYTHONDONTWRITEBYTECODE=1 (as here) otherwise
recompiles every edited module on every start (about 0.2 CPU-s), and a fresh `git worktree`
all of them. `--stale-bytecode` skips that, to measure such a checkout.

    .venv/bin/python -m bench.coldstart                  # 3 runs of the bundled repository
    git worktree add /tmp/cs-base <older commit>         # then, side by side:
    .venv/bin/python -m bench.coldstart --runs 5 --baseline /tmp/cs-base --first-request
    .venv/bin/python -m bench.coldstart --runs 1 --importtime --profile
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from protos.inference import grpc_service_pb2 as kserve_pb
from protos.vision.v1 import vision_pb2 as vision_pb

HOST = "127.0.0.1"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVER_READY = "/inference.GRPCInferenceService/ServerReady"
MODEL_READY = "/inference.GRPCInferenceService/ModelReady"
VISION_METADATA = "/vision.v1.VisionService/GetModelMetadata"
TIMEOUT_S = 120.0
POLL_S = 0.01


@dataclass
class ColdStart:
    """One start: seconds from spawn to each milestone, RSS in MiB at two of them."""

    serving_s: float
    ready_s: float
    explainable_s: float
    rss_ready_mib: float
    rss_explainable_mib: float
    server_load_s: float = float("nan")  # the server's own "started in" (load + listen)
    cpu_ready_s: float = float("nan")  # CPU seconds the server used until every model was READY
    cpu_serving_s: float = float("nan")  # CPU seconds the server used until SERVING
    rss_serving_mib: float = float("nan")
    first: dict[str, float] = field(default_factory=dict)  # --first-request: ms, and RSS after


def repository_models(root: Path) -> tuple[list[str], list[str]]:
    """Model folders on disk, and those whose config names an explain graph."""
    from vision.config import load_config

    names = sorted(p.name for p in root.iterdir() if (p / "config.yaml").is_file())
    explain = [n for n in names if load_config(root / n).explain.file]
    return names, explain


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds used so far by process group `pgid` (a figure a loaded machine
    stretches far less than wall time)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / ticks


def group_rss_mib(pgid: int) -> float:
    """VmRSS of every process in process group `pgid`, MiB."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024.0


class Probe:
    """Pre-serialised readiness calls on one channel; every call False on any RPC error."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)

    def _call(self, method: str, request, response_type):
        data = self.channel.unary_unary(method)(request.SerializeToString(), timeout=2.0)
        return response_type.FromString(data)

    def serving(self) -> bool:
        """gRPC health of the whole server is SERVING."""
        with contextlib.suppress(grpc.RpcError):
            reply = self._call(
                HEALTH_CHECK, health_pb2.HealthCheckRequest(), health_pb2.HealthCheckResponse
            )
            return reply.status == health_pb2.HealthCheckResponse.SERVING
        return False

    def ready(self, models: list[str]) -> bool:
        """ServerReady, and ModelReady for each of `models`."""
        with contextlib.suppress(grpc.RpcError):
            reply = self._call(
                SERVER_READY, kserve_pb.ServerReadyRequest(), kserve_pb.ServerReadyResponse
            )
            if not reply.ready:
                return False
            for name in models:
                request = kserve_pb.ModelReadyRequest(name=name)
                if not self._call(MODEL_READY, request, kserve_pb.ModelReadyResponse).ready:
                    return False
            return True
        return False

    def explainable(self, models: list[str]) -> bool:
        """vision.v1 metadata reports `explainable` for each of `models`."""
        with contextlib.suppress(grpc.RpcError):
            for name in models:
                request = vision_pb.GetModelMetadataRequest(model=vision_pb.ModelRef(name=name))
                if not self._call(VISION_METADATA, request, vision_pb.ModelMetadata).explainable:
                    return False
            return True
        return False


def serve_command(models: Path, port: int, extra: list[str] = (), http_port: int = -1) -> list[str]:
    """The `vision serve` command line for one run."""
    return [
        sys.executable,
        *extra,
        "-m",
        "app",
        "serve",
        "--models",
        str(models),
        "--host",
        HOST,
        "--grpc-port",
        str(port),
        "--http-port",
        str(http_port),
        "--log-level",
        "INFO",
    ]


def _wait(process: subprocess.Popen, started: float, check, log: Path) -> float:
    while not check():
        if process.poll() is not None or time.perf_counter() - started > TIMEOUT_S:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server did not get there (rc {process.poll()}):\n{tail}")
        time.sleep(POLL_S)
    return time.perf_counter() - started


def _stop(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait_s)


PACKAGES = ("app", "serving", "vision", "protos", "dicom_node", "review", "line")


def compile_tree(tree: Path | None) -> None:
    """Byte-compile the server's packages of `tree` (None: ours), as an install does."""
    root = tree or Path(__file__).resolve().parents[1]
    folders = [str(root / p) for p in PACKAGES if (root / p).is_dir()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *folders],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def measure(
    models: Path,
    names: list[str],
    explain: list[str],
    log: Path,
    tree: Path | None = None,
    first_request: bool = False,
    http: bool = True,
) -> ColdStart:
    """One cold start of the server over `models` (`tree`: run another checkout's server)."""
    port = free_port()
    probe = Probe(f"{HOST}:{port}")
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            serve_command(models, port, http_port=free_port() if http else -1),
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
            cwd=tree,
        )
    try:
        serving = _wait(process, started, probe.serving, log)
        cpu_serving, rss_serving = group_cpu_s(process.pid), group_rss_mib(process.pid)
        ready = _wait(process, started, lambda: probe.ready(names), log)
        rss_ready = group_rss_mib(process.pid)
        cpu_ready = group_cpu_s(process.pid)
        explainable = _wait(process, started, lambda: probe.explainable(explain), log)
        rss_explain = group_rss_mib(process.pid)
        found = re.search(r"started in ([0-9.]+) s", log.read_text(errors="replace"))
        load = float(found.group(1)) if found else float("nan")
        first = {}
        if first_request:
            from bench.coldstart_requests import first_requests

            first = first_requests(f"{HOST}:{port}")
            first["rss_after_mib"] = group_rss_mib(process.pid)
        return ColdStart(
            serving,
            ready,
            explainable,
            rss_ready,
            rss_explain,
            load,
            cpu_ready,
            cpu_serving,
            rss_serving,
            first,
        )
    finally:
        probe.channel.close()
        _stop(process)


def load_profile(models: Path, names: list[str]) -> str:
    """Per model, in this process: seconds for config, session, explain session, warm-up."""
    from bench.coldstart_profile import profile_model

    lines = ["per-model load profile (in-process, one at a time, seconds):"]
    for name in names:
        lines.append("  " + profile_model(models / name))
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def report(runs: list[ColdStart]) -> str:
    """Median and range of each milestone."""
    fields = [
        ("SERVING", "serving_s", "s"),
        ("CPU time until SERVING", "cpu_serving_s", "s"),
        ("RSS at SERVING", "rss_serving_mib", "MiB"),
        ("every model READY", "ready_s", "s"),
        ("every explain graph in", "explainable_s", "s"),
        ("of which the server's load", "server_load_s", "s"),
        ("CPU time until READY", "cpu_ready_s", "s"),
        ("RSS at READY", "rss_ready_mib", "MiB"),
        ("RSS with explain graphs", "rss_explainable_mib", "MiB"),
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"cold start, {len(runs)} run(s), {os.cpu_count()} CPU(s), load average {load}:"]
    for label, attr, unit in fields:
        values = [getattr(r, attr) for r in runs]
        lines.append(
            f"  {label:26s} median {_median(values):7.2f} {unit}  "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    for key in runs[0].first:
        values = [r.first[key] for r in runs]
        lines.append(
            f"  first request {key:16s} median {_median(values):7.1f}  "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )
    return "\n".join(lines)


def _run_all(
    trees: dict[str, tuple[Path | None, Path]], count: int, first_request: bool, http: bool
) -> dict[str, list[ColdStart]]:
    """`count` starts of each tree, interleaved (the order alternates run by run)."""
    runs: dict[str, list[ColdStart]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(count):
            order = list(trees) if index % 2 == 0 else list(reversed(trees))
            for label in order:
                tree, models = trees[label]
                names, explain = repository_models(models)
                log = Path(tmp) / f"{label}{index}.log"
                runs[label].append(measure(models, names, explain, log, tree, first_request, http))
                print(f"{label} run {index + 1}: {runs[label][-1]}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    """Run the cold-start measurement and print the medians."""
    p = argparse.ArgumentParser(prog="bench.coldstart", description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=Path(__file__).parents[1] / "models")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (say, a `git worktree` of an older commit): its server and its "
        "models/ start in turn with ours, interleaved, and both are reported",
    )
    p.add_argument(
        "--first-request",
        action="store_true",
        help="time the first and second Segment of a PNG and of a DICOM image",
    )
    p.add_argument(
        "--stale-bytecode",
        action="store_true",
        help="do not byte-compile the trees first (a checkout under PYTHONDONTWRITEBYTECODE)",
    )
    p.add_argument("--no-http", action="store_true", help="start without the HTTP port")
    p.add_argument("--importtime", action="store_true", help="add a -X importtime profile")
    p.add_argument("--profile", action="store_true", help="add a per-model load profile")
    args = p.parse_args(argv)
    trees = {"ours": (None, args.models)}
    if args.baseline is not None:
        trees["baseline"] = (args.baseline.resolve(), args.baseline.resolve() / "models")
    if not args.stale_bytecode:
        for tree, _ in trees.values():
            compile_tree(tree)
    runs = _run_all(trees, args.runs, args.first_request, not args.no_http)
    for label, found in runs.items():
        print(f"{label}: {report(found)}")
    if "baseline" in runs:
        ours, base = runs["ours"], runs["baseline"]
        for attr in ("serving_s", "cpu_serving_s", "rss_serving_mib", "ready_s", "rss_ready_mib"):
            ratio = _median([getattr(r, attr) for r in ours]) / _median(
                [getattr(r, attr) for r in base]
            )
            print(f"ours / baseline {attr}: {ratio:.2f}")
    names, explain = repository_models(args.models)
    if args.importtime:
        from bench.coldstart_profile import import_profile

        print(import_profile(args.models, names))
    if args.profile:
        print(load_profile(args.models, names))
    print(f"(command: python -m bench.coldstart {' '.join(sys.argv[1:])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
