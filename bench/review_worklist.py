"""The review worklist's response time with 10,000 cases, beside the same queries over 100.

    nice -n 10 .venv/bin/python -m bench.review_worklist [--cases 10000] [--repeat 30]

Runs the real server (`VisionServer` with the review tool, an empty model repository) on
loopback, signs in, and times `GET /review/api/cases` end to end (httpx, one connection) for
the worklist's usual queries: the default page, the first and a deep page of new cases by
score, a model filter, a text search. Two data dirs are measured side by side, interleaved
round by round so machine load hits both alike: one with `--small` cases, one with `--cases`.
Prints median and p95 per query and the ratio big / small of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx

from app.server import VisionServer
from review.settings import ReviewSettings
from serving.config import ServerConfig
from tests.review.worklist_data import insert_cases

QUERIES = {
    "default page": {},
    "new by score, page 1": {"status": "new", "sort": "max_score"},
    "new by score, page 20": {"status": "new", "sort": "max_score", "page": "20"},
    "model filter, oldest": {"model": "chest", "order": "asc"},
    "search a label": {"q": "dust"},
    "two statuses, 200/page": {"status": "new,in_review", "page_size": "200"},
}


class Running:
    """A VisionServer with the review tool in a thread of its own."""

    def __init__(self, data_dir: Path, models: Path) -> None:
        config = replace(ServerConfig(), models=models, host="127.0.0.1", grpc_port=-1, http_port=0)
        self.server = VisionServer(config, review=ReviewSettings(data_dir=data_dir))
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(120):
            raise TimeoutError("the server did not start in 120 s")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._ready.set()
        self.loop.run_until_complete(self.server.wait_stopped())

    def stop(self) -> None:
        """Stop the server and its loop."""
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)


def client_for(running: Running) -> httpx.Client:
    """A signed-in client (its CSRF token in the default headers)."""
    running.server.review.accounts.add_user("bench", "reviewer", "bench-password")
    client = httpx.Client(base_url=f"http://127.0.0.1:{running.server.http_port}", timeout=60)
    answer = client.post(
        "/review/api/login", json={"username": "bench", "password": "bench-password"}
    )
    answer.raise_for_status()
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client


def time_once(client: httpx.Client, params: dict) -> float:
    """Milliseconds for one worklist request (status checked)."""
    start = time.perf_counter()
    answer = client.get("/review/api/cases", params=params)
    elapsed = (time.perf_counter() - start) * 1000.0
    answer.raise_for_status()
    return elapsed


def main() -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-review-"))
    (root / "models").mkdir()
    servers = {}
    for label, count in (("small", args.small), ("big", args.cases)):
        running = Running(root / label, root / "models")
        insert_cases(running.server.review.db, count)
        servers[label] = (running, client_for(running))
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for name, params in QUERIES.items():
            for label, (_, client) in servers.items():
                times.setdefault((name, label), []).append(time_once(client, params))
    print(f"worklist response time (ms), {args.small} vs {args.cases} cases, n={args.repeat} each")
    print(f"{'query':28s} {'small med':>10s} {'big med':>9s} {'big p95':>9s} {'big/small':>10s}")
    for name in QUERIES:
        small, big = times[(name, "small")], times[(name, "big")]
        p95 = statistics.quantiles(big, n=20)[18]
        ratio = statistics.median(big) / statistics.median(small)
        print(
            f"{name:28s} {statistics.median(small):10.2f} {statistics.median(big):9.2f} "
            f"{p95:9.2f} {ratio:10.2f}"
        )
    for running, client in servers.values():
        client.close()
        running.stop()


if __name__ == "__main__":
    main()
