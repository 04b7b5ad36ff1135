"""The review page on localhost: time to the first rendered image and bytes downloaded, for a
2048x2048 16-bit DICOM and a 640x640 PNG, and the worklist API's response time with 10,000
cases.

    nice -n 10 .venv/bin/python -m bench.review [--repeat 5] [--cases 10000]

Runs the real server (`VisionServer` with the review tool, the tiny explainable test models)
on loopback and Debian's Chromium through Playwright. Each image is opened `--repeat` times in
a fresh browser context (cold cache, signed in first) by navigating straight to the case; the
time is the page's `performance.mark("review:first-image")` (set right after the canvas drew
the image) since navigation start (with the marks of the case JSON and of the image bytes
received, to split it), and the bytes are the sum of `transferSize` (headers and
encoded bodies, as on the wire) of the navigation and every resource that finished before the
mark. The two images are measured round by round, interleaved, so machine load hits both
alike; the ratio DICOM / PNG of the medians is printed. The worklist is timed end to end
(httpx, one connection, default page of 50) with the few cases of the image runs, then again
after 10,000 cases are written into the database; also the page's own `/cases` request
(Resource Timing) when the worklist loads. Results: bench/results/review.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from tests.review.worklist_data import insert_cases
from tests.review_browser.conftest import (
    CHROMIUM,
    PASSWORD,
    ReviewServer,
    api_client,
    browser_missing,
    start_review_server,
    upload,
)
from tests.review_browser.images import blob_png, ct_dicom
from tests.serving.tiny_models import build_explainable_repository
from vision.reports import write_json

RESULTS = Path(__file__).parent / "results" / "review.json"
MARK = "review:first-image"
BYTES_BEFORE_MARK = """(mark) => {
  const t = performance.getEntriesByName(mark)[0].startTime;
  const entries = [...performance.getEntriesByType("navigation"),
                   ...performance.getEntriesByType("resource")].filter((e) => e.responseEnd <= t);
  const at = (name) => performance.getEntriesByName(`review:${name}`)[0]?.startTime ?? null;
  return {
    ms: t,
    case_ms: at("case"),
    image_bytes_ms: at("image-bytes"),
    transfer: entries.reduce((s, e) => s + e.transferSize, 0),
    body: entries.reduce((s, e) => s + e.encodedBodySize, 0),
    decoded: entries.reduce((s, e) => s + e.decodedBodySize, 0),
    requests: entries.length,
  };
}"""


def signed_in_context(browser, server: ReviewServer):
    """A fresh context (cold cache) with a session cookie, made through the sign-in form."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=server.url)
    context.set_default_timeout(180_000)
    page = context.new_page()
    page.goto("/review/login")
    page.fill("#username", "bench")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#page-info:text('case(s)')")
    page.close()
    return context


def first_image(browser, server: ReviewServer, case_id: int) -> dict:
    """One cold open of a case: ms to the first drawn image and the bytes until then."""
    context = signed_in_context(browser, server)
    try:
        page = context.new_page()
        page.goto(f"/review/#/case/{case_id}")
        page.wait_for_function(f"performance.getEntriesByName('{MARK}').length > 0")
        return page.evaluate(BYTES_BEFORE_MARK, MARK)
    finally:
        context.close()


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p95": p95, "min": ordered[0], "n": len(ordered)}


def time_worklist(server: ReviewServer, repeat: int) -> dict:
    """GET /review/api/cases (default page) end to end, `repeat` times after one warm-up."""
    with contextlib.closing(api_client(server, "bench")) as client:
        client.get("/review/api/cases").raise_for_status()
        times, total = [], 0
        for _ in range(repeat):
            start = time.perf_counter()
            answer = client.get("/review/api/cases")
            times.append((time.perf_counter() - start) * 1000)
            answer.raise_for_status()
            total = answer.json()["total"]
    return {"cases": total, "ms": summary(times)}


def page_worklist(browser, server: ReviewServer, repeat: int) -> dict:
    """The page's own `/cases` request when the worklist loads (Resource Timing, ms)."""
    context = signed_in_context(browser, server)
    times = []
    try:
        page = context.new_page()
        for _ in range(repeat):
            page.goto("/review/#/")
            page.wait_for_selector("#worklist tbody tr")
            times.append(
                page.evaluate(
                    "performance.getEntriesByType('resource')"
                    ".filter((e) => e.name.includes('/review/api/cases?'))"
                    ".map((e) => e.responseEnd - e.startTime).pop()"
                )
            )
            page.reload()
    finally:
        context.close()
    return summary(times)


def images(browser, server: ReviewServer, repeat: int) -> dict:
    with contextlib.closing(api_client(server, "bench")) as client:
        dicom = upload(client, "bright-x", ct_dicom(2048), "ct-2048.dcm")
        png = upload(client, "boxes-x", blob_png(640), "photo-640.png")
    assert dicom["image"]["dtype"] in ("uint16", "int16"), dicom["image"]
    runs: dict[str, list[dict]] = {"dicom_2048_16bit": [], "png_640": []}
    for _ in range(repeat):  # interleaved: the same load on both
        runs["dicom_2048_16bit"].append(first_image(browser, server, dicom["id"]))
        runs["png_640"].append(first_image(browser, server, png["id"]))
    out = {}
    for name, rows in runs.items():
        out[name] = {
            "first_image_ms": summary([r["ms"] for r in rows]),
            "case_json_done_ms": statistics.median(r["case_ms"] for r in rows),
            "image_bytes_done_ms": statistics.median(r["image_bytes_ms"] for r in rows),
            "transfer_bytes": statistics.median(r["transfer"] for r in rows),
            "encoded_body_bytes": statistics.median(r["body"] for r in rows),
            "decoded_body_bytes": statistics.median(r["decoded"] for r in rows),
            "requests": statistics.median(r["requests"] for r in rows),
        }
    out["ratio_dicom_over_png_first_image"] = (
        out["dicom_2048_16bit"]["first_image_ms"]["median"]
        / out["png_640"]["first_image_ms"]["median"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="cold opens per image")
    parser.add_argument("--cases", type=int, default=10_000, help="cases for the worklist")
    parser.add_argument("--api-repeat", type=int, default=30, help="worklist requests timed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    reason = browser_missing()
    if reason:
        raise SystemExit(f"bench.review: {reason}")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        models = build_explainable_repository(Path(tmp) / "models")
        server = start_review_server(models, Path(tmp) / "data", max_pixels=8_000_000)
        server.tool.accounts.add_user("bench", "reviewer", PASSWORD)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
                result = {"images": images(browser, server, args.repeat)}
                few = time_worklist(server, args.api_repeat)
                insert_cases(server.tool.db, args.cases)
                many = time_worklist(server, args.api_repeat)
                result["worklist"] = {
                    "few": few,
                    "many": many,
                    "ratio_many_over_few": many["ms"]["median"] / few["ms"]["median"],
                    "page_request_ms_many": page_worklist(browser, server, 5),
                }
                result["browser"] = browser.version
                browser.close()
        finally:
            server.stop()
    result["command"] = "nice -n 10 .venv/bin/python -m bench.review " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
    )
    write_json(result, args.out)
    report(result)


def report(result: dict) -> None:
    for name in ("dicom_2048_16bit", "png_640"):
        r = result["images"][name]
        print(
            f"{name:18s} first image {r['first_image_ms']['median']:8.1f} ms (median of "
            f"{r['first_image_ms']['n']}), {r['transfer_bytes'] / 1e6:6.2f} MB transferred "
            f"({r['decoded_body_bytes'] / 1e6:.2f} MB decoded, {r['requests']:.0f} requests)"
        )
    print(f"DICOM / PNG first image: {result['images']['ratio_dicom_over_png_first_image']:.2f}x")
    w = result["worklist"]
    print(
        f"worklist API: {w['many']['cases']} cases {w['many']['ms']['median']:.1f} ms median "
        f"(p95 {w['many']['ms']['p95']:.1f}), {w['few']['cases']} cases "
        f"{w['few']['ms']['median']:.1f} ms: {w['ratio_many_over_few']:.2f}x; the page's own "
        f"request {w['page_request_ms_many']['median']:.1f} ms"
    )


if __name__ == "__main__":
    main()
