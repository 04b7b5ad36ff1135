"""The DICOM node against a real PACS (Orthanc): where the time goes, outbox throughput, 10 senders.

    nice -n 10 .venv/bin/python -m bench.dicom_node [--quick] [--archive orthanc|storescp]
        [--scenarios 2d,series,outbox,concurrent] [--out reports/bench-dicom-node]

Orthanc (loopback, temporary config) and `vision dicom-node run` (bundled models and rules) run as
processes. Scenarios:
- `2d`: one fundus photograph (Ophthalmic Photography, DRIVE) pushed by Orthanc to the node;
- `series`: a series of 100 fundus photographs (10 with --quick) pushed as one study.
  From the last instance received to the results stored in Orthanc, split from the job's
  timestamps (`GET /dicom-node/jobs`) and Orthanc's store log:
  receive (Orthanc's push: first byte to the release, measured here), assemble (last instance
  received -> series routed: `received_at` -> `assembled_at`), infer (`assembled_at` ->
  `inferred_at`), encode (`inferred_at` -> `encoded_at`), queue (`encoded_at` -> `queued_at`),
  send (`queued_at` -> last result stored in Orthanc, polled every 10 ms). Since session 16 a
  job's last results are sent while they are written (`Outbox.enqueue(send_now=True)`):
  `queued_at` is then when the last file was written, and the C-STOREs of the earlier ones
  overlap "queue"; "send" is what is left after the last write.
  Goal (issue 14): everything but inference <= 10 % of the total (last received -> stored).
  `acked_s` is the same total ended at the archive's last C-STORE success, as the outbox recorded
  it. `--archive storescp`: the node sends its results to dcmtk's `storescp` (no index, no
  database) instead of Orthanc, which still pushes the study; "stored" is then the last success
  in the outbox. Orthanc's own storage time is the difference between the two runs.
- `outbox`: the PACS down while N smear studies are processed, then up: results per second
  delivered from the backlog (first to last result stored).
- `concurrent`: 10 associations (dcmsend) at once, one smear study each: all acknowledged, all
  processed, results stored.
Prints a table and writes report.json into `--out`.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from tests.dicom_node import wrap
from tests.dicom_node.orthanc import (
    NODE_AE,
    NodeProcess,
    Orthanc,
    dcmsend,
    dcmtk_missing,
    free_port,
    node_models,
    orthanc_missing,
    running_node,
    running_orthanc,
    wait_for,
)
from tests.dicom_node.storescp import running_storescp, storescp_missing
from vision.reports import write_json

STAGES = ("assemble", "infer", "encode", "queue", "send")
# stage -> (job field it starts at, job field it ends at); "stored" is Orthanc's store time.
STAGE_FIELDS = {
    "assemble": ("received_at", "assembled_at"),
    "infer": ("assembled_at", "inferred_at"),
    "encode": ("inferred_at", "encoded_at"),
    "queue": ("encoded_at", "queued_at"),
    "send": ("queued_at", "stored"),
}
TIMEOUT = 1800


class StoreWatch:
    """Polls Orthanc's store log (every 10 ms) and records when each SOP Instance UID appeared."""

    def __init__(self, pacs: Orthanc) -> None:
        self.pacs = pacs
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StoreWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for uid in self.pacs.stored():
                self.seen.setdefault(uid, now)
            time.sleep(0.01)


@dataclass
class Bench:
    pacs: Orthanc
    node: NodeProcess
    folder: Path
    missing_fields: set[str] = field(default_factory=set)
    archive: str = "orthanc"

    def jobs_of(self, study_uid: str) -> list[dict]:
        return [job for job in self.node.jobs() if job["study_uid"] == study_uid]

    def wait_sent(self, study_uids: set[str], timeout: float = TIMEOUT) -> list[dict]:
        """Wait until every job of these studies is sent; the jobs."""

        def done() -> list[dict] | None:
            jobs = [job for job in self.node.jobs() if job["study_uid"] in study_uids]
            failed = [job for job in jobs if job["state"] in ("failed", "set_aside")]
            assert not failed, f"jobs failed: {failed}"
            studies = {job["study_uid"] for job in jobs}
            sent = studies == study_uids and all(job["state"] == "sent" for job in jobs)
            return jobs if sent else None

        return wait_for(done, timeout, f"jobs of {len(study_uids)} studies sent")

    def result_uids(self, jobs: list[dict]) -> list[str]:
        return [i["sop_instance_uid"] for i in self.items(jobs)]

    def items(self, jobs: list[dict]) -> list[dict]:
        ids = {job["job_id"] for job in jobs}
        return [i for i in self.node.outbox() if i.get("job_id") in ids]


def push_and_split(bench: Bench, sources: list[Path]) -> dict:
    """Upload `sources` (one study) to Orthanc, push it to the node, split the time by stage."""
    study_uid = str(pydicom.dcmread(sources[0], stop_before_pixels=True).StudyInstanceUID)
    for path in sources:
        bench.pacs.upload(path)
    with StoreWatch(bench.pacs) as watch:
        start = time.time()
        bench.pacs.push_study("vision", study_uid, timeout=TIMEOUT)
        pushed = time.time()
        jobs = bench.wait_sent({study_uid})
        items = bench.items(jobs)
        uids = [i["sop_instance_uid"] for i in items]
        if bench.archive == "orthanc":
            wait_for(lambda: all(u in watch.seen for u in uids), 120, "results in the store log")
    acked = max(i["updated_at"] for i in items)  # the last C-STORE success, as recorded
    stored = max(watch.seen[u] for u in uids) if bench.archive == "orthanc" else acked
    out = split(bench, jobs, start, pushed, stored, len(sources), len(uids))
    out["acked_s"] = acked - (stored - out["total_s"])
    return out


def split(
    bench: Bench, jobs: list[dict], start: float, pushed: float, stored: float, n: int, results: int
) -> dict:
    """Stage durations (s) from one study's jobs (several models: the slowest per stage)."""
    marks: dict[str, float] = {"stored": stored}
    for name in {f for pair in STAGE_FIELDS.values() for f in pair} - {"stored"}:
        values = [job[name] for job in jobs if job.get(name)]
        if values:
            marks[name] = max(values)
        else:
            bench.missing_fields.add(name)
    received = marks.get("received_at", pushed)
    stages = {
        stage: (marks[b] - marks[a]) if a in marks and b in marks else None
        for stage, (a, b) in STAGE_FIELDS.items()
    }
    total = stored - received
    infer = stages["infer"]
    overhead = (total - infer) / total if infer is not None and total > 0 else None
    return {
        "instances": n,
        "results": results,
        "receive_s": pushed - start,
        "stages_s": stages,
        "total_s": total,
        "non_inference_share": overhead,
        "last_received_from": "job received_at" if "received_at" in marks else "push returned",
    }


def repeated(count: int, one: Callable[[int], dict]) -> dict:
    """`one(i)` run `count` times (new studies each time): the run of median total, with every
    run's stages and the median of each stage and of the non-inference share."""
    runs = [one(i) for i in range(count)]
    if count == 1:
        return runs[0]
    by_total = sorted(runs, key=lambda r: r["total_s"])
    out = dict(by_total[(count - 1) // 2])
    out["runs"] = runs
    out["median_s"] = {
        stage: statistics.median(r["stages_s"][stage] for r in runs)
        for stage in STAGES
        if all(r["stages_s"][stage] is not None for r in runs)
    }
    out["median_s"]["total"] = statistics.median(r["total_s"] for r in runs)
    shares = [r["non_inference_share"] for r in runs if r["non_inference_share"] is not None]
    out["non_inference_share_median"] = statistics.median(shares) if shares else None
    out["non_inference_s_median"] = statistics.median(
        r["total_s"] - r["stages_s"]["infer"] for r in runs if r["stages_s"]["infer"] is not None
    )
    return out


def outbox_throughput(bench: Bench, studies: int) -> dict:
    """PACS down, `studies` smear studies processed, PACS up: results/s out of the backlog."""
    bench.pacs.stop()
    uids = set()
    for i in range(studies):
        files = wrap.smear_series(bench.folder / f"outbox-{i}", 1)
        uids.add(str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID))
        dcmsend(bench.node.dicom_port, files)

    def queued() -> bool:
        jobs = [j for j in bench.node.jobs() if j["study_uid"] in uids]
        return {j["study_uid"] for j in jobs} == uids and all(j["state"] == "queued" for j in jobs)

    wait_for(queued, TIMEOUT, "every job queued with the PACS down")
    backlog = [i for i in bench.node.outbox() if i["state"] in ("pending", "sending")]
    up = time.time()
    bench.pacs.start()
    with StoreWatch(bench.pacs) as watch:
        jobs = bench.wait_sent(uids)
        result_uids = bench.result_uids(jobs)
        wait_for(lambda: all(u in watch.seen for u in result_uids), 120, "backlog stored")
    times = sorted(watch.seen[u] for u in result_uids)
    span = times[-1] - times[0]
    received = bench.pacs.receptions()
    return {
        "studies": studies,
        "results": len(result_uids),
        "backlog_items": len(backlog),
        "first_after_pacs_up_s": times[0] - up,
        "drain_s": span,
        "results_per_s": (len(times) - 1) / span if span > 0 else None,
        "duplicates": sum(received.count(u) - 1 for u in result_uids),
    }


def concurrent_senders(bench: Bench, senders: int) -> dict:
    """`senders` dcmsend associations at once, one smear study each."""
    batches = [wrap.smear_series(bench.folder / f"conc-{i}", 1) for i in range(senders)]
    uids = {str(pydicom.dcmread(b[0], stop_before_pixels=True).StudyInstanceUID) for b in batches}

    def send(files: list[Path]) -> float:
        t0 = time.time()
        dcmsend(bench.node.dicom_port, files)
        return time.time() - t0

    start = time.time()
    with cf.ThreadPoolExecutor(senders) as pool:
        durations = list(pool.map(send, batches))
    acknowledged = time.time()
    jobs = bench.wait_sent(uids)
    done = time.time()
    received = bench.pacs.receptions()
    result_uids = bench.result_uids(jobs)
    return {
        "associations": senders,
        "acknowledged": len(durations),
        "processed_studies": len({j["study_uid"] for j in jobs}),
        "results": len(result_uids),
        "duplicates": sum(received.count(u) - 1 for u in result_uids),
        "send_s_median": statistics.median(durations),
        "send_s_max": max(durations),
        "all_acknowledged_s": acknowledged - start,
        "all_results_stored_s": done - start,
    }


def table(report: dict) -> str:
    rows = [
        "scenario      inst  results  receive  "
        + "  ".join(f"{s:>8}" for s in STAGES)
        + "     total  non-infer     acked"
    ]
    for name in ("2d", "series"):
        if name not in report:
            continue
        r = report[name]
        stages = "  ".join(
            f"{r['stages_s'][s]:8.3f}" if r["stages_s"][s] is not None else "       ?"
            for s in STAGES
        )
        share = r["non_inference_share"]
        rows.append(
            f"{name:12s} {r['instances']:5d} {r['results']:8d} {r['receive_s']:8.3f}  {stages}"
            f"  {r['total_s']:8.3f}  "
            + (f"{share:8.1%}" if share is not None else "       ?")
            + f"  {r.get('acked_s', 0.0):8.3f}"
        )
        if "median_s" in r:
            m = r["median_s"]
            rows.append(
                f"  median of {len(r['runs'])}: "
                + "  ".join(f"{s} {m[s]:.3f}" for s in STAGES if s in m)
                + f"  total {m['total']:.3f}  non-inference {r['non_inference_s_median']:.3f} s"
                + f" ({r['non_inference_share_median']:.1%})"
            )
    if "outbox" in report:
        o = report["outbox"]
        rows.append(
            f"outbox: {o['results']} results from the backlog in {o['drain_s']:.2f} s = "
            f"{o['results_per_s'] or 0:.1f} results/s, duplicates {o['duplicates']}"
        )
    if "concurrent" in report:
        c = report["concurrent"]
        rows.append(
            f"concurrent: {c['acknowledged']}/{c['associations']} associations acknowledged in "
            f"{c['all_acknowledged_s']:.2f} s, {c['processed_studies']} studies processed, "
            f"results stored after {c['all_results_stored_s']:.2f} s, "
            f"duplicates {c['duplicates']}"
        )
    return "\n".join(rows)


SCENARIOS = ("2d", "series", "outbox", "concurrent")


def run(args: argparse.Namespace, root: Path) -> dict:
    node_port = free_port()
    models = node_models(root / "models")
    modalities = {"vision": (NODE_AE, "127.0.0.1", node_port)}
    with running_orthanc(root / "pacs", modalities) as pacs, contextlib.ExitStack() as stack:
        destination = pacs.destination
        if args.archive == "storescp":
            scp = stack.enter_context(running_storescp(root / "archive"))
            destination = str(scp)
        node = NodeProcess(root / "node", models, destination, dicom_port=node_port)
        node.extra = tuple(args.node_arg)
        with running_node(node):
            bench = Bench(pacs, node, root / "data", archive=args.archive)
            frames = 10 if args.quick else args.frames
            push_and_split(bench, wrap.fundus_study(bench.folder / "warm", 1))  # warm-up
            scenarios = {
                "2d": lambda: repeated(
                    args.repeat,
                    lambda i: push_and_split(bench, wrap.fundus_study(bench.folder / f"2d-{i}", 1)),
                ),
                "series": lambda: push_and_split(
                    bench, wrap.fundus_study(bench.folder / "s", frames)
                ),
                "outbox": lambda: outbox_throughput(
                    bench, 5 if args.quick else args.outbox_studies
                ),
                "concurrent": lambda: concurrent_senders(bench, args.senders),
            }
            report = {name: scenarios[name]() for name in args.scenarios}
            report["missing_job_fields"] = sorted(bench.missing_fields)
    report["dataset"] = "drive+bccd" if not wrap.dataset_missing("drive") else "synthetic"
    report["quick"] = args.quick
    report["archive"] = args.archive
    report["load_average_1m_at_end"] = os.getloadavg()[0]  # the machine's load: wall times scale
    return report


def _scenarios(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenarios {unknown}: choose from {SCENARIOS}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="10-image series, 5 outbox studies")
    p.add_argument("--frames", type=int, default=100, help="images in the series scenario")
    p.add_argument(
        "--repeat", type=int, default=1, help="2d: this many studies, one after another (medians)"
    )
    p.add_argument("--outbox-studies", type=int, default=20)
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--node-arg", action="append", default=[], help="extra flag for the node")
    p.add_argument(
        "--archive",
        choices=("orthanc", "storescp"),
        default="orthanc",
        help="where the node sends its results (Orthanc still pushes the study)",
    )
    p.add_argument(
        "--scenarios",
        type=_scenarios,
        default=list(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)}; outbox and concurrent need Orthanc",
    )
    p.add_argument("--out", type=Path, default=Path("reports/bench-dicom-node"))
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    reason = orthanc_missing() or dcmtk_missing() or storescp_missing()
    if args.archive == "storescp" and {"outbox", "concurrent"} & set(args.scenarios):
        p.error("--archive storescp runs the 2d and series scenarios only")
    if reason:
        print(f"bench.dicom_node: {reason}")
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-dicom-node-"))
    try:
        report = run(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(report))
    if report["missing_job_fields"]:
        print(f"job fields missing from GET /dicom-node/jobs: {report['missing_job_fields']}")
    name = ("report-quick" if args.quick else "report") + (
        "" if args.archive == "orthanc" else f"-{args.archive}"
    )
    name += ".json"
    print(f"wrote {write_json(report, args.out / name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
