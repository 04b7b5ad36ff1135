"""Where the DICOM node's non-inference time goes, stage by stage, in one process.

    nice -n 10 .venv/bin/python -m bench.dicom_node_profile [--images 100] [--out DIR]

For one fundus photograph and a series of `--images` (Ophthalmic Photography from DRIVE, fake but
realistic vessel masks: the green channel thresholded, about the model's vessel fraction):
- encode: `build_results` split into SEG (highdicom, one per instance: the photographs have no
  Frame of Reference), SR (TID 1500) and GSPS, CPU seconds;
- enqueue: `Outbox.enqueue` (files written with fsync, folder fsync, one SQLite commit);
- send: `Outbox.deliver_due` of that backlog (one association per batch of 64, a commit per
  outcome) into a real Orthanc and into dcmtk's `storescp`, side by side; plus the bare C-STOREs
  of the same files on one association (pynetdicom, no outbox) to separate the node's bookkeeping
  from the archive's own storage time.
Prints a table and writes profile.json into `--out`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pynetdicom import AE

from dicom_node.delivery import StoreScuSender
from dicom_node.gsps import presentation_states
from dicom_node.model import Destination
from dicom_node.outbox import Outbox
from dicom_node.results import ResultStream, source_frames
from dicom_node.seg import mask_segmentations
from dicom_node.sr import measurement_report
from dicom_node.tcp import LowLatencyAE
from dicom_node.uids import Producer
from serving.dataplane import Prediction
from tests.dicom_node import wrap
from tests.dicom_node.orthanc import orthanc_missing, running_orthanc
from tests.dicom_node.storescp import running_storescp
from vision.io.dicom_header import read_header
from vision.reports import write_json
from vision.types import ClassMask, Image, SegmentationResult

MODEL, VERSION, LABELS = "retina-vessels", "1", ("background", "vessel")


def _prediction(ds: pydicom.Dataset) -> Prediction:
    pixels = ds.pixel_array
    green = pixels[..., 1].astype(np.float32)
    vessel = green < np.percentile(green, 12)  # about the vessel fraction the model finds
    masks = [ClassMask(0, "background", ~vessel, 0.9), ClassMask(1, "vessel", vessel, 0.8)]
    image = Image(pixels, "dicom", read_header(ds).pixel_spacing_mm, read_header(ds))
    return Prediction(MODEL, VERSION, image, SegmentationResult(masks, image_score=0.5))


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def encode(sources: list[pydicom.Dataset], predictions: list[Prediction]) -> tuple[list, dict]:
    """The results, and the seconds (wall, CPU) of each kind."""
    producer = Producer(MODEL, VERSION, LABELS)
    paired = source_frames(sources, predictions)
    segs, seg_wall, seg_cpu = _timed(lambda: mask_segmentations(paired, producer))
    report, sr_wall, sr_cpu = _timed(lambda: measurement_report(paired, segs, producer))
    ps, ps_wall, ps_cpu = _timed(lambda: presentation_states(paired, producer))
    stream = ResultStream(MODEL, VERSION, LABELS)
    _, add_wall, add_cpu = _timed(
        lambda: [stream.add([ds], [p]) for ds, p in zip(sources, predictions, strict=True)]
    )
    _, finish_wall, finish_cpu = _timed(stream.finish)
    times = {
        "seg_s": seg_wall, "seg_cpu_s": seg_cpu, "segs": len(segs),
        "sr_s": sr_wall, "sr_cpu_s": sr_cpu, "gsps_s": ps_wall, "gsps_cpu_s": ps_cpu,
        # the node's path: instance by instance while inferring, then the tail after the last
        "stream_add_s": add_wall, "stream_add_cpu_s": add_cpu,
        "stream_finish_s": finish_wall, "stream_finish_cpu_s": finish_cpu,
    }  # fmt: skip
    return [*segs, report, *ps], times


def bare_stores(dest: Destination, files: list[Path], low_latency: bool) -> dict:
    """The same files C-STOREd on one association, nothing recorded: the wire and the archive."""
    ae = (LowLatencyAE if low_latency else AE)("PROFILE")
    for path in files[:1] + files[-2:]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    start = time.perf_counter()
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    associated = time.perf_counter()
    each = []
    for path in files:
        t0 = time.perf_counter()
        status = assoc.send_c_store(path)
        assert status and status.Status == 0, f"C-STORE status {status}"
        each.append(time.perf_counter() - t0)
    assoc.release()
    return {
        "associate_s": associated - start,
        "stores_s": sum(each),
        "store_s_median": float(np.median(each)),
        "total_s": time.perf_counter() - start,
    }


def outbox_run(
    root: Path, dest: Destination, job: str, results: list, low_latency: bool = True
) -> dict:
    """Enqueue `results` in a fresh outbox and deliver them: seconds of each step."""
    sender = StoreScuSender("PROFILE", low_latency=low_latency)
    outbox = Outbox(root / "node.sqlite", [dest], sender)
    _, enqueue_s, _ = _timed(lambda: outbox.enqueue(job, results))
    _, deliver_s, _ = _timed(outbox.deliver_due)
    sent = outbox.counts()
    outbox.store.close()
    return {"enqueue_s": enqueue_s, "deliver_s": deliver_s, "sent": sent["sent"]}


def case(root: Path, count: int, archives: dict[str, Destination]) -> dict:
    """Encode, enqueue and send the results of `count` fundus photographs."""
    files = wrap.fundus_study(root / "src", count)
    sources = [pydicom.dcmread(p) for p in files]
    predictions = [_prediction(ds) for ds in sources]
    results, times = encode(sources, predictions)
    out: dict = {"images": count, "results": len(results), "encode": times}
    written = root / "written"
    written.mkdir(parents=True, exist_ok=True)
    paths = [wrap.save(r, written / f"r{i}.dcm") for i, r in enumerate(results)]
    for name, dest in archives.items():
        # the outbox with plain pynetdicom sockets (objects new to the archive), then with the
        # node's low-latency ones (the same objects again: the archive keeps its first copy)
        out[name] = {
            "plain": outbox_run(root / f"plain-{name}", dest, f"plain-{name}", results, False),
            "low_latency": outbox_run(root / f"fast-{name}", dest, f"fast-{name}", results),
            "bare_plain": bare_stores(dest, paths, False),
            "bare_low_latency": bare_stores(dest, paths, True),
        }
    return out


def table(report: dict) -> str:
    lines = []
    for name in ("2d", "series"):
        r = report[name]
        e = r["encode"]
        lines.append(
            f"{name}: {r['images']} images, {r['results']} results; encode SEG {e['seg_s']:.3f} s "
            f"({e['segs']}), SR {e['sr_s']:.3f} s, GSPS {e['gsps_s']:.3f} s "
            f"(CPU {e['seg_cpu_s']:.3f}, {e['sr_cpu_s']:.3f}, {e['gsps_cpu_s']:.3f}); streamed: "
            f"per instance CPU {e['stream_add_cpu_s']:.3f} s, "
            f"tail (SR+GSPS finish) CPU {e['stream_finish_cpu_s']:.3f} s"
        )
        for archive in ("orthanc", "storescp"):
            for kind in ("plain", "low_latency"):
                a, b = r[archive][kind], r[archive][f"bare_{kind}"]
                lines.append(
                    f"  {archive:8s} {kind:11s} enqueue {a['enqueue_s']:6.3f} s, deliver "
                    f"{a['deliver_s']:6.3f} s | bare: associate {b['associate_s']:.3f} s, "
                    f"C-STOREs {b['stores_s']:6.3f} s (median {b['store_s_median'] * 1000:5.1f} ms)"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=100, help="images in the series case")
    p.add_argument("--out", type=Path, default=Path("reports/bench-dicom-node"))
    args = p.parse_args(argv)
    if orthanc_missing():
        print(f"bench.dicom_node_profile: {orthanc_missing()}")
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-dicom-profile-"))
    try:
        with running_orthanc(root / "pacs") as pacs, running_storescp(root / "scp") as scp:
            orthanc = Destination(pacs.aet, "127.0.0.1", pacs.dicom_port)
            archives = {"orthanc": orthanc, "storescp": scp}
            case(root / "warm", 1, archives)
            report = {
                "2d": case(root / "2d", 1, archives),
                "series": case(root / "series", args.images, archives),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["load_average_1m_at_end"] = os.getloadavg()[0]
    print(table(report))
    print(f"wrote {write_json(report, args.out / 'profile.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
