"""`vision serve --workers N`: N processes on one port, metrics added up, restart, SIGTERM.

Each test runs the real command in a subprocess over the tiny test models; which worker gets a
connection is the kernel's choice (SO_REUSEPORT), so the tests spread requests over many
connections and read which processes listen from /proc.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.mmap_dict import MmapedDict

from protos.inference import grpc_service_pb2 as pb
from protos.inference import grpc_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0
REQUESTS = 30

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT and /proc: Linux")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Workers:
    process: subprocess.Popen
    grpc_port: int
    http_port: int
    metrics_dir: Path
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def children(self) -> list[int]:
        return [pid for pid in _all_pids() if _parent_of(pid) == self.process.pid]

    def listeners(self) -> set[int]:
        """The processes that have a socket listening on the gRPC port."""
        inodes = _listening_inodes(self.grpc_port)
        return {pid for pid in self.children() if _socket_inodes(pid) & inodes}

    def wait_listening(self, count: int, exclude: set[int] = frozenset()) -> set[int]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"vision serve exited {self.process.returncode}:\n{self.tail()}")
            pids = self.listeners() - set(exclude)
            if len(pids) >= count and _ready(self.address):
                return pids
            time.sleep(0.3)
        pytest.fail(f"{count} workers did not listen in {START_TIMEOUT_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _listening_inodes(port: int) -> set[int]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == "0A":  # LISTEN
                inodes.add(int(fields[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    except OSError:
        pass
    return found


def _ready(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            return stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready
        except grpc.RpcError:
            return False


def _infer_on_a_new_connection(address: str) -> None:
    options = [("grpc.use_local_subchannel_pool", 1)]  # its own TCP connection
    with grpc.insecure_channel(address, options=options) as channel:
        request = pb.ModelInferRequest(model_name="bright", model_version="2")
        request.inputs.add(name="images", datatype="FP32", shape=[1, 3, 64, 64])
        request.raw_input_contents.append(np.zeros((1, 3, 64, 64), np.float32).tobytes())
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        assert response.outputs[0].name == "logits"


def _served_by_pid(metrics_dir: Path) -> dict[int, float]:
    """vision_requests_total for our infer calls, per worker pid, from the multiprocess files."""
    served = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        total = 0.0
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            name, sample, labels, _ = json.loads(key)
            if sample == "vision_requests_total" and labels.get("api") == "infer":
                total += value
        served[pid] = total
    return served


def _scraped_total(http_port: int) -> float:
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as reply:  # a new connection each time
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vision_requests_total{") and 'api="infer"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _start(repository: Path, tmp_path: Path, count: int = 2) -> Workers:
    grpc_port, http_port = _free_port(), _free_port()
    metrics_dir, log = tmp_path / "metrics", tmp_path / "serve.log"
    command = [sys.executable, "-m", "app", "serve", "--models", str(repository)]
    command += ["--host", "127.0.0.1", "--grpc-port", str(grpc_port)]
    command += ["--http-port", str(http_port), "--workers", str(count)]
    command += ["--drain-timeout", "10"]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    env.pop("VISION_API_KEY", None)
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Workers(process, grpc_port, http_port, metrics_dir, log)


def _stop(workers: Workers) -> int:
    if workers.process.poll() is None:
        workers.process.send_signal(signal.SIGTERM)
    try:
        return workers.process.wait(90)
    except subprocess.TimeoutExpired:
        for pid in [*workers.children(), workers.process.pid]:
            os.kill(pid, signal.SIGKILL)
        raise


@pytest.fixture(scope="module")
def two_workers(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    workers = _start(repository, tmp_path_factory.mktemp("workers"))
    try:
        workers.wait_listening(2)
        yield workers
    finally:
        _stop(workers)


def test_two_workers_listen_on_one_port(two_workers):
    children = two_workers.children()
    assert len(children) == 2
    assert two_workers.listeners() == set(children)


def test_metrics_add_up_across_workers(two_workers):
    before = _scraped_total(two_workers.http_port)
    for _ in range(REQUESTS):
        _infer_on_a_new_connection(two_workers.address)
    served = _served_by_pid(two_workers.metrics_dir)
    assert sum(served.values()) == before + REQUESTS
    assert len([pid for pid, n in served.items() if n > 0]) == 2, served  # both workers served
    for _ in range(6):  # scrapes land on either worker; every one adds up all of them
        assert _scraped_total(two_workers.http_port) == before + REQUESTS


def test_a_dead_worker_is_replaced_and_sigterm_stops_all(repository, tmp_path):
    workers = _start(repository, tmp_path)
    try:
        first = workers.wait_listening(2)
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        now = workers.wait_listening(2, exclude={victim})
        assert victim not in now and len(now) == 2
        _infer_on_a_new_connection(workers.address)
        children = workers.children()
    finally:
        code = _stop(workers)
    assert code == 0, workers.tail()
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


def test_a_worker_that_keeps_dying_stops_the_parent_with_exit_1():
    from serving.workers import RestartPolicy, Supervisor

    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    supervisor = Supervisor(command, 2, drain_timeout_s=1.0, restart=RestartPolicy(2, 60.0))
    assert supervisor.run() == 1


def test_sigterm_to_the_parent_reaches_every_worker(tmp_path):
    """Plain processes as workers: each records the signal it got, then exits 0."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "def stop(signum, frame):\n"
        f"    open(os.path.join({str(tmp_path)!r}, 'got-' + os.environ['VISION_WORKER']), 'w')"
        ".write(str(signum))\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open(os.path.join({str(tmp_path)!r}, 'up-' + os.environ['VISION_WORKER']), 'w')\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from serving.workers import run_workers; "
            f"sys.exit(run_workers([sys.executable, {str(script)!r}], 3, 5.0))",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("up-*"))) < 3:  # every worker has its handler
        assert time.monotonic() < deadline and parent.poll() is None, "workers did not start"
        time.sleep(0.1)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(60) == 0
    got = sorted(p.name for p in tmp_path.glob("got-*"))
    assert got == ["got-0", "got-1", "got-2"]
    assert {p.read_text() for p in tmp_path.glob("got-*")} == {str(int(signal.SIGTERM))}


def test_multiprocess_exposition_adds_workers_and_keeps_scrape_time_collectors(tmp_path):
    """Two processes write counters into one folder; a third's exposition has both, plus its
    queue depths (read at scrape time)."""
    observe = (
        "from serving.metrics import Metrics\n"
        "m = Metrics()\n"
        "for _ in range({n}):\n"
        "    m.observe_request('infer', 'bright', '2', 'ok', 0.01)\n"
    )
    scrape = (
        "from serving.metrics import Metrics\n"
        "m = Metrics()\n"
        "m.watch_queue_depths(lambda: {('bright', '2'): 5})\n"
        "print(m.exposition()[0].decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (3, 4):
        code = observe.format(n=n)
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    done = subprocess.run(
        [sys.executable, "-c", scrape],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    lines = done.stdout.splitlines()
    requests = [ln for ln in lines if ln.startswith("vision_requests_total{")]
    assert len(requests) == 1 and requests[0].endswith(" 7.0"), requests
    assert any(ln.startswith("vision_queue_depth{") and ln.endswith(" 5.0") for ln in lines)
