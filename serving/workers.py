"""`vision serve --workers N`: N server processes on the same ports, and the parent over them.

Each worker is a whole server (its own repository, batchers and ONNX Runtime sessions) started
as a subprocess of the same command; every worker binds the gRPC and HTTP ports with
SO_REUSEPORT, so the kernel spreads incoming connections over the workers that are listening
(a worker listens only once its models are loaded, so whichever worker answers is ready).
Prometheus metrics are kept in prometheus-client's multiprocess mode: every worker writes its
values under one PROMETHEUS_MULTIPROC_DIR and `/metrics` on any worker adds them up
(`serving/metrics.py`).

The parent (`Supervisor`) starts the workers, restarts one that dies (a few times; a worker that
keeps dying stops them all, exit 1), forwards SIGTERM / SIGINT to every worker so all of them
drain, and exits 0 when all of them did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "VISION_WORKER"  # the worker's index, in its environment
POLL_S = 0.2


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)


@dataclass
class RestartPolicy:
    """At most `max_restarts` restarts within `window_s`; more means a worker keeps dying."""

    max_restarts: int = 3
    window_s: float = 60.0
    history: list[float] = field(default_factory=list)

    def allow(self) -> bool:
        """Record a restart; False when the budget of the window is spent."""
        now = time.monotonic()
        self.history = [t for t in self.history if now - t < self.window_s] + [now]
        return len(self.history) <= self.max_restarts


def prepare_metrics_dir(given: str | None) -> tuple[Path, bool]:
    """The multiprocess metrics folder (emptied), and whether this process made it."""
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # values of an earlier run would be added in
            stale.unlink()
        return folder, False
    return Path(tempfile.mkdtemp(prefix="vision-metrics-")), True


class Supervisor:
    """Runs `count` copies of `command` and watches them until a signal stops them all."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        drain_timeout_s: float,
        restart: RestartPolicy | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"--workers must be >= 1, not {count}")
        self._command = list(command)
        self._count = count
        self._drain_timeout_s = drain_timeout_s
        self._restart = restart or RestartPolicy()
        self._workers: list[_Worker] = []
        self._stopping = False
        self._metrics_dir = Path()

    def run(self) -> int:
        """Start the workers and supervise them; the exit code for the whole."""
        self._metrics_dir, owned = prepare_metrics_dir(os.environ.get(MULTIPROC_ENV))
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._forward_reload)
        try:
            self._workers = [self._spawn(i) for i in range(self._count)]
            log.info("started %d workers: pids %s", self._count, self.pids())
            code = self._watch()
        finally:
            codes = self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if owned:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        # A worker still starting has no handler yet: SIGTERM ends it at once, as asked.
        if code == 0 and any(c not in (0, -signal.SIGTERM) for c in codes):
            log.error("worker exit codes %s", codes)
            return 1
        return code

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [w.process.pid for w in self._workers]

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self._stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self._workers))
        self._stopping = True

    def _forward_reload(self, signum: int, frame: object) -> None:
        """SIGHUP: every worker reloads its certificates and token file."""
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    def _spawn(self, index: int) -> _Worker:
        env = {**os.environ, MULTIPROC_ENV: str(self._metrics_dir), WORKER_ENV: str(index)}
        # Its own process group: a Ctrl-C on the terminal reaches the parent alone, which
        # forwards SIGTERM, so each worker drains exactly once; and a worker whose parent dies
        # (even by SIGKILL) gets SIGTERM from the kernel instead of living on unsupervised.
        process = subprocess.Popen(
            self._command, env=env, process_group=0, preexec_fn=_terminate_with_parent
        )
        return _Worker(index, process)

    def _watch(self) -> int:
        while not self._stopping:
            for slot, worker in enumerate(self._workers):
                code = worker.process.poll()
                if code is None:
                    continue
                self._forget(worker)
                log.error(
                    "worker %d (pid %d) exited with %s", worker.index, worker.process.pid, code
                )
                if self._stopping:
                    break
                if not self._restart.allow():
                    log.error(
                        "workers keep dying (more than %d restarts in %.0f s); stopping all. "
                        "Their log lines above say why",
                        self._restart.max_restarts,
                        self._restart.window_s,
                    )
                    return 1
                self._workers[slot] = self._spawn(worker.index)
                log.info("restarted worker %d: pid %d", worker.index, self.pids()[slot])
            time.sleep(POLL_S)
        return 0

    def _forget(self, worker: _Worker) -> None:
        """A dead worker's live gauges leave the aggregate (prometheus-client's rule)."""
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(worker.process.pid, str(self._metrics_dir))

    def _stop_all(self) -> list[int]:
        """SIGTERM every worker, wait for all to drain, SIGKILL what outlives the drain."""
        alive = [w for w in self._workers if w.process.poll() is None]
        for worker in alive:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._drain_timeout_s + 15.0
        for worker in alive:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.wait()
        return [w.process.returncode for w in alive]


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def run_workers(command: Sequence[str], count: int, drain_timeout_s: float) -> int:
    """Supervise `count` workers running `command`; returns the process exit code."""
    return Supervisor(command, count, drain_timeout_s).run()
