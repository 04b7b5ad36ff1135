"""Volumetric serving benchmark: time per volume through `SegmentVolume`, and what is not inference.

    python -m bench.volume [--repeats N] [--json PATH] [--ct-slices 100]

Starts `python -m app serve` on loopback over a temporary repository and times, per case,
`--repeats` calls (after one warm-up call): the server's stages (decode_ms = series decoding
and volume assembly, preprocess_ms = normalisation and resampling to the model's spacing — for
a one-pass model whose grid keeps the slices, such as the CT stand-in, the input is filled a
row of windows at a time and all but the first row's part runs while windows do, inside the
sliding window's time — inference_ms = the windows' share of the batches' compute,
postprocess_ms = blending's end,
resampling back, masks and run-length encoding after the last window — for a one-pass
two-class model such as the CT stand-in only the last slab, the scores and the encoding: its
earlier slabs are postprocessed while windows still run, inside the sliding window's time —
total_ms) and the client's wall time
(request encoding, transfer, decoding of the answer included). The non-inference share is
1 - inference_ms / total_ms (goal <= 10 %). Then, with the server stopped, the same cases run
in-process with the CPU time of each stage (`bench.volume_cpu`): on a shared machine wall
time also measures the wait for a core, CPU time does not.

Cases: the bundled `models/hippocampus` on a hippocampus volume (MSD Task04 image from
`../shared/datasets/hippocampus`, sent raw) when both exist, as bundled (test-time mirroring:
8 passes) and as a copy without mirroring (1 pass); and a synthetic 512x512xN CT
(0.7 x 0.7 x 2.5 mm, int16 HU, a liver-sized ellipsoid) sent as a raw volume and as a DICOM
series of N instances, through a small stand-in volumetric network (3D conv 1->8, ReLU, 1x1x1
conv 8->2; patch 32x128x128 at 2.5 x 1 x 1 mm) — said so in the output, it is not a trained model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.serving import HOST, free_port, server_process
from bench.volume_cpu import cpu_stages, print_cpu_table
from serving.client import VisionClient
from serving.volumes import VolumeSource
from vision.config import load_config, parse_config, write_config
from vision.paths import default_repository

STAGES = ("decode_ms", "preprocess_ms", "queue_ms", "inference_ms", "postprocess_ms", "total_ms")
CT_MODEL = "ct-standin"
CT_SPACING = (2.5, 0.7, 0.7)
ONE_PASS = "hippocampus-1pass"


def standin_network(path: Path, patch: tuple[int, int, int], seed: int = 0) -> Path:
    """volume [N,1,*patch] -> logits [N,2,*patch]: conv3d 3x3x3 1->8, ReLU, conv 1x1x1 8->2."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (8, 1, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (2, 8, 1, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["volume", "w1"], ["h"], pads=[1] * 6),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin3d",
        [helper.make_tensor_value_info("volume", TensorProto.FLOAT, ["N", 1, *patch])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, *patch])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def write_repository(root: Path) -> list[str]:
    """The stand-in CT model, and the bundled hippocampus model when it has a version."""
    patch = (32, 128, 128)
    config = parse_config(
        {
            "name": CT_MODEL,
            "task": "volumetric_segmentation",
            "labels": ["background", "organ"],
            "input": {"name": "volume", "layout": "NCDHW", "channels": 1},
            "preprocess": {"channel_order": "GRAY"},
            "postprocess": {"type": "argmax"},
            "batching": {"max_batch_size": 4, "max_queue_delay_ms": 0},
            "volume": {
                "spacing_mm": [2.5, 1.0, 1.0],
                "patch": list(patch),
                "overlap": 0.25,
                "normalisation": "window",
                "window_min": -200.0,
                "window_max": 300.0,
            },
        }
    )
    write_config(config, root / CT_MODEL)
    standin_network(root / CT_MODEL / "1" / "model.onnx", patch)
    names = [CT_MODEL]
    hippocampus = default_repository() / "hippocampus"
    if any(hippocampus.glob("*/model.onnx")):
        shutil.copytree(hippocampus, root / "hippocampus")
        names.append("hippocampus")
        one = load_config(hippocampus)  # the same model without test-time mirroring
        one = dataclasses.replace(
            one, name=ONE_PASS, volume=dataclasses.replace(one.volume, tta_flips=())
        )
        shutil.copytree(hippocampus, root / ONE_PASS)
        write_config(one, root / ONE_PASS)
        names.append(ONE_PASS)
    return names


def synthetic_ct(slices: int) -> np.ndarray:
    """int16 HU [slices, 512, 512]: air, a body ellipse (40 HU) and an organ (120 HU)."""
    z, y, x = np.ogrid[:slices, :512, :512]
    body = ((y - 256) / 200.0) ** 2 + ((x - 256) / 240.0) ** 2 <= 1.0
    organ = ((z - slices / 2) / (slices / 3)) ** 2 + ((y - 230) / 90.0) ** 2 + (
        (x - 300) / 110.0
    ) ** 2 <= 1.0
    ct = np.full((slices, 512, 512), -1000, np.int16)
    ct[np.broadcast_to(body, ct.shape)] = 40
    ct[organ] = 120
    noise = np.random.default_rng(0).normal(0, 10, ct.shape).astype(np.int16)
    return ct + noise


def ct_series(ct: np.ndarray) -> list[bytes]:
    """The CT as a DICOM series (one CT Image Storage instance per slice, axial)."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for k in range(ct.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.InstanceNumber = "CT", k + 1
        ds.ImagePositionPatient = [-179.0, -179.0, k * CT_SPACING[0]]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [CT_SPACING[1], CT_SPACING[2]], CT_SPACING[0]
        ds.Rows, ds.Columns, ds.SamplesPerPixel = 512, 512, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(ct[k], "<i2").tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def hippocampus_volume():
    """(voxels, spacing) of one MSD Task04 test image, or None when the data set is absent."""
    folder = Path(__file__).resolve().parents[1].parent / "shared/datasets/hippocampus/imagesTs"
    images = sorted(folder.glob("*.nii.gz")) if folder.is_dir() else []
    if not images:
        return None
    from vision.volume.sources import volume_from_nifti

    volume = volume_from_nifti(images[0])
    return volume.voxels.astype(np.float32), volume.spacing_mm, volume.origin_mm, volume.direction


def measure(client: VisionClient, model: str, payload, repeats: int) -> dict:
    """One warm-up call, then `repeats` timed calls: medians of each stage and the wall time."""
    client.segment_volume(model, payload)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.segment_volume(model, payload)
        wall = (time.perf_counter() - start) * 1000.0
        runs.append({**{s: getattr(response.timings, s) for s in STAGES}, "wall_ms": wall})
    row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    row["windows"] = response.windows
    row["shape"] = list(response.shape)
    row["non_inference_share"] = 1.0 - row["inference_ms"] / row["total_ms"]
    row["non_inference_share_wall"] = 1.0 - row["inference_ms"] / row["wall_ms"]
    return row


def print_table(rows: dict[str, dict]) -> None:
    """The median stage times per case, and the non-inference shares."""
    head = f"{'case':52} {'windows':>7} " + " ".join(f"{s[:-3]:>11}" for s in STAGES)
    print(head + f" {'wall':>9} {'not inf.':>9} {'non-inf':>8} {'(wall)':>7}")
    for name, r in rows.items():
        stages = " ".join(f"{r[s]:11.1f}" for s in STAGES)
        print(
            f"{name:52} {r['windows']:7d} {stages} {r['wall_ms']:9.1f} "
            f"{r['total_ms'] - r['inference_ms']:9.1f} "
            f"{r['non_inference_share']:8.1%} {r['non_inference_share_wall']:7.1%}"
        )
    print(
        "not inf. = total - inference (ms, the same calls); non-inf = its share of total, "
        "(wall) of the client's wall time"
    )


def run_cases(address: str, names: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """The CT cases (raw, series) and the hippocampus case when its model and data are here."""
    rows: dict[str, dict] = {}
    with VisionClient(address, timeout_s=600) as client:
        ct = synthetic_ct(args.ct_slices)
        label = f"CT 512x512x{args.ct_slices} raw ({CT_MODEL}, not trained)"
        rows[label] = measure(client, CT_MODEL, (ct, CT_SPACING), args.repeats)
        label = f"CT 512x512x{args.ct_slices} DICOM series ({CT_MODEL})"
        rows[label] = measure(client, CT_MODEL, ct_series(ct), args.repeats)
        hippo = hippocampus_volume() if "hippocampus" in names else None
        if hippo is not None:
            label = "hippocampus MR raw (as bundled: 8 mirrored passes)"
            rows[label] = measure(client, "hippocampus", hippo, args.repeats)
            label = "hippocampus MR raw (1 pass, no mirroring)"
            rows[label] = measure(client, ONE_PASS, hippo, args.repeats)
        else:
            print("models/hippocampus (or its data set) absent: no hippocampus figure")
    return rows


def cpu_cases(models: Path, names: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """The same cases in-process, CPU time per stage (`bench.volume_cpu`), server stopped."""
    ct = synthetic_ct(args.ct_slices)
    raw = VolumeSource(raw=ct.tobytes(), shape=ct.shape, dtype="int16", spacing_mm=CT_SPACING)
    rows = {
        f"CT 512x512x{args.ct_slices} raw ({CT_MODEL})": cpu_stages(
            models / CT_MODEL, raw, args.repeats
        ),
        f"CT 512x512x{args.ct_slices} DICOM series ({CT_MODEL})": cpu_stages(
            models / CT_MODEL, VolumeSource(instances=tuple(ct_series(ct))), args.repeats
        ),
    }
    hippo = hippocampus_volume() if "hippocampus" in names else None
    if hippo is not None:
        voxels, spacing, origin, direction = hippo
        source = VolumeSource(
            raw=voxels.tobytes(),
            shape=voxels.shape,
            dtype="float32",
            spacing_mm=tuple(spacing),
            origin_mm=tuple(origin),
            direction=tuple(np.asarray(direction).ravel()),
        )
        for name, label in (("hippocampus", "8 mirrored passes"), (ONE_PASS, "1 pass")):
            rows[f"hippocampus MR raw ({label})"] = cpu_stages(models / name, source, args.repeats)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print / write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ct-slices", type=int, default=100)
    parser.add_argument("--json", type=Path, default=Path("reports/bench_volume.json"))
    parser.add_argument("--no-cpu", action="store_true", help="skip the in-process CPU table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = write_repository(root / "models")
        port = free_port()
        command = [sys.executable, "-m", "app", "serve", "--models", str(root / "models")]
        command += ["--host", HOST, "--grpc-port", str(port), "--http-port", "-1"]
        with server_process("vision", command, port, names, root / "server.log") as server:
            rows = run_cases(server.address, names, args)
        cpu = {} if args.no_cpu else cpu_cases(root / "models", names, args)
    print_table(rows)
    if cpu:
        print_cpu_table(cpu)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"served_wall_ms": rows, "cpu_ms": cpu}, indent=2))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
