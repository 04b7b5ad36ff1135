"""Fuzz the server at scale: 10^5 inputs through a real `vision serve` process, and the decoders.

    python -m bench.fuzz [--inputs 100000] [--seed 18] [--workers 4]

The server runs as its own process (`python -m app serve`, the tiny test models of
`tests/fuzz/conftest.py`, loopback, `--max-image-pixels 2000000`), so its RSS is its own: read
from /proc before the run (after a warm-up: valid requests, the corpus, 200 cases of another
seed) and after it; it must stay within 20 %. Inputs: a hypothesis pool of structured cases
and seeded mutants of it (`tests/fuzz/run.py`) to vision.v1 Detect / Segment / Explain,
KServe ModelInfer and v2 REST infer; then `vision.io.decode_image` in-process on image and
DICOM inputs. Printed and written to `bench/results/fuzz.json`: counts per API and status,
INTERNAL / UNKNOWN, hangs (calls past the client deadline), crashes (the server process gone),
RSS before / after / peak. Inputs that got a failing status are written under
`bench/results/fuzz-failures/`.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.conftest import fuzz_repository
from tests.fuzz.mutate import Mutator
from tests.fuzz.reproducers import CORPUS, MAX_PIXELS
from tests.fuzz.run import Tally, inputs, pool, send_all
from tests.fuzz.strategies import decoder_inputs
from tests.fuzz.targets import Clients, image_request, small_png

RESULTS = Path(__file__).parent / "results"
RSS_TOLERANCE = 0.20
TRACE_EVERY = 10_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024.0
    return fields


def start_server(models: Path, log: Path) -> tuple[subprocess.Popen, Clients]:
    """`python -m app serve` on free loopback ports; waits until a valid request succeeds."""
    grpc_port, http_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "app", "serve", "--models", str(models)]
    command += ["--host", "127.0.0.1", "--grpc-port", str(grpc_port)]
    command += ["--http-port", str(http_port), "--max-image-pixels", str(MAX_PIXELS)]
    command += ["--log-level", "WARNING"]
    env = {k: v for k, v in os.environ.items() if k != "VISION_API_KEY"}  # no auth
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    clients = Clients(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", deadline_s=30.0)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}); see {log}")
        if clients.send("image", small_png(), "bright").status == "OK":
            return server, clients
        time.sleep(1.0)
    server.kill()
    raise TimeoutError(f"the server did not serve within 180 s; see {log}")


def warm_up(clients: Clients, count: int = 300) -> None:
    """Before RSS is read: valid requests on every API, and each corpus file once, so that
    allocator pools exist and every lazily imported decoder (pydicom's plugins, Pillow's,
    OpenCV's codecs) is loaded; what grows after that is the run's."""
    for index in range(count):
        png = small_png(index)
        for api, model in (("detect", "boxes"), ("segment", "bright"), ("explain", "bright-x")):
            clients.send(api, image_request(api, model, png))
    for row in json.loads((CORPUS / "manifest.json").read_text()):
        data = (CORPUS / row["file"]).read_bytes()
        clients.send(row["api"], data, row["model"], row["headers"])
    for case in pool(200, 1):  # another seed than the run's
        clients.send(*case)


def fuzz_decoders(count: int, seed: int) -> dict[str, int]:
    """`decode_image` in-process on `count` inputs; counts per outcome (exception type)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from vision.errors import VisionError
    from vision.io import decode_image

    found: list[bytes] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=min(count, 500),
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(decoder_inputs())
    def collect(data: bytes) -> None:
        found.append(data)

    collect()
    mutator, outcomes = Mutator(seed), collections.Counter()
    for index in range(count):
        data = found[index % len(found)]
        data = data if index < len(found) else mutator.data(data)
        try:
            decode_image(data, max_pixels=MAX_PIXELS)
            outcomes["OK"] += 1
        except VisionError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - exactly what the bench counts
            outcomes[f"CRASH {type(exc).__name__}"] += 1
            _keep(data, f"decoder-{sum(outcomes.values()):06d}-{type(exc).__name__}.bin")
    return dict(outcomes)


def _keep(data: bytes, name: str) -> None:
    folder = RESULTS / "fuzz-failures"
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.iterdir())) < 40:
        (folder / name).write_bytes(data)


def _save_failures(tally: Tally, folder: Path) -> list[dict]:
    rows = []
    for index, (case, status, message) in enumerate(tally.failures):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:02d}-{case[0]}-{status}.bin"
        path.write_bytes(case[1])
        rows.append(
            {
                "file": path.name,
                "api": case[0],
                "model": case[2],
                "status": status,
                "message": message[:300],
                "headers": case[3],
            }
        )
    return rows


def run(args: argparse.Namespace) -> dict:
    """The whole bench: server fuzz, then decoder fuzz; the result as a dict."""
    work = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    server, clients = start_server(fuzz_repository(work / "models"), work / "server.log")
    try:
        rss_start = _rss_mb(server.pid)
        warm_up(clients)
        rss_before = _rss_mb(server.pid)
        started = time.monotonic()
        structured = pool(args.pool, args.seed)
        stream, tally, trace = inputs(args.inputs, structured, args.seed), Tally(), []
        for _ in range(0, args.inputs, TRACE_EVERY):  # in parts, RSS read after each
            send_all(clients, itertools.islice(stream, TRACE_EVERY), args.workers, tally)
            if server.poll() is None:
                trace.append([tally.total, round(_rss_mb(server.pid)["VmRSS"], 1)])
        seconds = time.monotonic() - started
        alive = server.poll() is None
        rss_after = _rss_mb(server.pid) if alive else {}
        still_serves = alive and clients.send("image", small_png(), "bright").status == "OK"
    finally:
        clients.close()
        server.terminate()
        server.wait(60)
    statuses = tally.by_status()
    before, after = rss_before["VmRSS"], rss_after.get("VmRSS", float("nan"))
    return {
        "command": f"python -m bench.fuzz --inputs {args.inputs} --seed {args.seed} "
        f"--workers {args.workers} --pool {args.pool}",
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "inputs": tally.total,
        "seconds": round(seconds, 1),
        "inputs_per_s": round(tally.total / seconds, 1),
        "by_status": dict(statuses.most_common()),
        "by_api": {api: dict(c.most_common()) for api, c in sorted(tally.counts.items())},
        "internal_or_unknown": statuses["INTERNAL"] + statuses["UNKNOWN"],
        "unimplemented": statuses["UNIMPLEMENTED"],
        "any_failing_status": tally.failed(),
        "hangs": statuses["HANG"],
        "crashes": int(not alive) + statuses["CONNECTION"],
        "server_alive_and_serving_after": still_serves,
        "slowest_call_s": round(tally.slowest_s, 3),
        "patient_marker_in_replies": tally.leaked,
        "rss_mb": {
            "at_start": round(rss_start["VmRSS"], 1),
            "before_run": round(before, 1),
            "after_run": round(after, 1),
            "peak": round(rss_after.get("VmHWM", float("nan")), 1),
        },
        "rss_growth": round(after / before - 1.0, 4),
        "rss_mb_after_inputs": trace,
        "rss_within_20_percent": abs(after / before - 1.0) <= RSS_TOLERANCE,
        "failures": _save_failures(tally, RESULTS / "fuzz-failures"),
        "decoders_in_process": fuzz_decoders(args.decoder_inputs, args.seed),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench, print the figures, write bench/results/fuzz.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="server inputs (10^5)")
    parser.add_argument("--decoder-inputs", type=int, default=20_000, help="in-process inputs")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--pool", type=int, default=2000, help="hypothesis cases to mutate")
    parser.add_argument("--workers", type=int, default=4, help="concurrent client calls")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    args = parser.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=1))
    crashed = any(key.startswith("CRASH") for key in result["decoders_in_process"])
    ok = result["any_failing_status"] == 0 and result["crashes"] == 0 and not crashed
    return 0 if ok and result["rss_within_20_percent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
