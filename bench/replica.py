"""Single-replica throughput of each bundled reference model, per core of the server.

    python -m bench.replica [--phase-s 20] [--rounds 3] [--concurrency 4]

Starts one `python -m app serve` over the bundled models (loopback) and, in `--rounds`
interleaved rounds, drives each model with a closed loop of `--concurrency` callers sending a
real dataset image (vision.v1 Detect / Segment; a hippocampus MR volume through SegmentVolume
when nibabel is installed). For each phase it reads the server's CPU time (utime + stime of
its process, /proc) before and after: answers per server CPU-second is the "requests per second
per core" of a replica, a figure that holds on a loaded machine where wall-clock rates do not
(the load generator's own CPU is not counted). Wall-clock rates and the load average are
printed beside it. Results: `--output` (default bench/results/replica.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.overload import closed_loop, served
from protos.vision.v1 import vision_pb2 as pb
from serving.client import _raw_volume

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/datasets")
RESULTS = ROOT / "bench" / "results" / "replica.json"
SERVICE = "/vision.v1.VisionService/"


@dataclass(frozen=True)
class Subject:
    """One model, the RPC that drives it and the input it sends."""

    model: str
    method: str
    input: Path


SUBJECTS = (
    Subject("blood-cells", "Detect", DATA / "bccd/BCCD/JPEGImages/BloodImage_00000.jpg"),
    Subject("blood-cells-int8", "Detect", DATA / "bccd/BCCD/JPEGImages/BloodImage_00000.jpg"),
    Subject("pcb-defects", "Detect", DATA / "deeppcb/PCBData/group12300/12300/12300246_test.jpg"),
    Subject("retina-vessels", "Segment", DATA / "drive/DRIVE/test/images/02_test.tif"),
    Subject("tile-defects", "Segment", DATA / "magnetic-tile/MT_Blowhole/Imgs/exp1_num_40410.jpg"),
    Subject("hippocampus", "SegmentVolume", DATA / "hippocampus/imagesTs/hippocampus_002.nii.gz"),
)


def payload(subject: Subject) -> bytes:
    """The serialized request of `subject`."""
    ref = pb.ModelRef(name=subject.model)
    if subject.method == "SegmentVolume":
        from vision.volume.sources import volume_from_nifti

        volume = volume_from_nifti(subject.input)
        raw = _raw_volume(volume.voxels, volume.spacing_mm, volume.origin_mm, volume.direction)
        return pb.SegmentVolumeRequest(model=ref, volume=raw).SerializeToString()
    image = pb.ImageInput(encoded=subject.input.read_bytes())
    request = pb.DetectRequest if subject.method == "Detect" else pb.SegmentRequest
    return request(model=ref, image=image).SerializeToString()


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def available(subjects: tuple[Subject, ...]) -> tuple[list[Subject], list[str]]:
    """The subjects whose input and dependencies are here, and why the others are left out."""
    keep, left_out = [], []
    for subject in subjects:
        if not subject.input.is_file():
            left_out.append(f"{subject.model}: no input at {subject.input}")
        elif subject.method == "SegmentVolume" and not _has("nibabel"):
            left_out.append(f"{subject.model}: nibabel is not installed (the train extra)")
        elif not (ROOT / "models" / subject.model).is_dir():
            left_out.append(f"{subject.model}: not in models/")
        else:
            keep.append(subject)
    return keep, left_out


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


async def phase(server, subject: Subject, data: bytes, args) -> dict:
    """One closed-loop phase: OK answers, wall seconds, server CPU seconds."""
    address, pid, _ = server
    cpu0 = cpu_seconds(pid)
    result = await closed_loop(
        address, SERVICE + subject.method, data, args.concurrency, args.phase_s, subject.model
    )
    cpu = cpu_seconds(pid) - cpu0
    ok = sum(1 for code, _, _ in result.answers if code == "OK")
    codes = sorted({code for code, _, _ in result.answers})
    return {"ok": ok, "wall_s": result.seconds, "cpu_s": cpu, "codes": codes}


def summarise(rows: list[dict]) -> dict:
    """Totals over rounds: requests per server CPU-second and per wall second."""
    ok = sum(r["ok"] for r in rows)
    cpu, wall = sum(r["cpu_s"] for r in rows), sum(r["wall_s"] for r in rows)
    per_round = [r["ok"] / r["cpu_s"] for r in rows if r["cpu_s"] > 0]
    return {
        "ok": ok,
        "per_core_per_s": round(ok / cpu, 2) if cpu else None,
        "per_core_per_s_rounds": [round(v, 2) for v in per_round],
        "wall_per_s": round(ok / wall, 2) if wall else None,
        "server_cores_busy": round(cpu / wall, 2) if wall else None,
        "codes": sorted({c for r in rows for c in r["codes"]}),
    }


async def run(args: argparse.Namespace, subjects: list[Subject]) -> dict:
    """Warm up each model, then interleaved rounds; the summary per model."""
    data = {s.model: payload(s) for s in subjects}
    rows: dict[str, list[dict]] = {s.model: [] for s in subjects}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp, served(_repository(Path(tmp), subjects)) as server:
        for subject in subjects:
            await closed_loop(
                server[0], SERVICE + subject.method, data[subject.model], 1, 3.0, "warm"
            )
        for number in range(args.rounds):
            for subject in subjects:
                row = await phase(server, subject, data[subject.model], args)
                rows[subject.model].append(row)
                load.append(os.getloadavg()[0])
                print(f"round {number + 1} {subject.model}: {row}", flush=True)
    return {
        "models": {m: summarise(r) for m, r in rows.items()},
        "load_average_1m": [round(v, 1) for v in load],
    }


def _repository(tmp: Path, subjects: list[Subject]) -> Path:
    models = tmp / "models"
    models.mkdir()
    for subject in subjects:
        (models / subject.model).symlink_to(ROOT / "models" / subject.model)
    return models


def main(argv: list[str] | None = None) -> int:
    """Measure, print and write the results."""
    p = argparse.ArgumentParser(prog="python -m bench.replica", description=__doc__)
    p.add_argument("--phase-s", type=float, default=20.0, help="seconds per model and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--models", default="", help="comma-separated (default: every subject)")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    wanted = set(filter(None, args.models.split(",")))
    chosen = tuple(s for s in SUBJECTS if not wanted or s.model in wanted)
    subjects, left_out = available(chosen)
    for reason in left_out:
        print(f"left out: {reason}", file=sys.stderr)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = asyncio.run(run(args, subjects))
    result.update(
        command="python -m bench.replica " + " ".join(argv if argv is not None else sys.argv[1:]),
        run_utc=started,
        cpus=os.cpu_count(),
        left_out=left_out,
        concurrency=args.concurrency,
    )
    print(json.dumps(result["models"], indent=1))
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
