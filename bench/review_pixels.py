"""What the review page downloads for an image, and how long the server takes to send it.

    nice -n 10 .venv/bin/python -m bench.review_pixels [--repeat 20]

Runs the real server (`VisionServer` with the review tool and the test suite's tiny models) on
loopback, uploads a 2048x2048 16-bit CT slice (DICOM, 10 HU noise) and a 640x640 RGB PNG, then
times, side by side and interleaved, what the page can fetch for each: raw pixels (identity, gzip)
and the 8-bit PNG rendering. Prints bytes on the wire and median / p95 milliseconds (request
sent to last byte read, httpx on one connection); the server-side half of the page's
time-to-first-image.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.review_worklist import Running, client_for
from tests.review.conftest import png
from tests.review.test_dicom import ct_slice
from tests.serving.tiny_models import build_explainable_repository


def _upload(client: httpx.Client, data: bytes, name: str) -> int:
    answer = client.post(
        "/review/api/cases", files={"image": (name, data)}, data={"model": "bright-x"}
    )
    answer.raise_for_status()
    return int(answer.json()["id"])


def _fetch(client: httpx.Client, path: str, gzip: bool) -> tuple[float, int]:
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    start = time.perf_counter()
    with client.stream("GET", path, headers=headers) as answer:
        answer.raise_for_status()
        wire = sum(len(chunk) for chunk in answer.iter_raw())
    return (time.perf_counter() - start) * 1000.0, wire


def main() -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-review-pixels-"))
    build_explainable_repository(root / "models")
    running = Running(root / "data", root / "models")
    client = client_for(running)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (640, 640, 3), dtype=np.uint8)
    photo[200:400, 200:400] = 255
    cases = {
        "2048x2048 16-bit DICOM": _upload(client, ct_slice(2048, noise_hu=10.0), "ct.dcm"),
        "640x640 RGB PNG": _upload(client, png(photo), "photo.png"),
    }
    fetches = [("pixels", "pixels", False), ("pixels gzip", "pixels", True),
               ("image.png", "image.png", False)]  # fmt: skip
    rows: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for _ in range(args.repeat):
        for image, case_id in cases.items():
            for label, endpoint, gz in fetches:
                path = f"/review/api/cases/{case_id}/{endpoint}"
                rows.setdefault((image, label), []).append(_fetch(client, path, gz))
    print(f"review image downloads on loopback, n={args.repeat} each (ms: request to last byte)")
    print(f"{'image':24s} {'fetch':12s} {'bytes':>10s} {'median ms':>10s} {'p95 ms':>8s}")
    for (image, label), samples in rows.items():
        ms = [s[0] for s in samples]
        p95 = statistics.quantiles(ms, n=20)[18]
        print(
            f"{image:24s} {label:12s} {samples[0][1]:10d} {statistics.median(ms):10.2f} {p95:8.2f}"
        )
    client.close()
    running.stop()


if __name__ == "__main__":
    main()
