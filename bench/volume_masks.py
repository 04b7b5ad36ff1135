"""Served volume masks of a checkout, written and compared: is a change to the volume path exact?

    python -m bench.volume_masks write OUT.npz [--cases N] [--ct-slices 100]
    python -m bench.volume_masks compare BEFORE.npz AFTER.npz

`write` starts `python -m app serve` over `bench.volume`'s repository (the bundled hippocampus
model as bundled, with 8 mirrored passes, and the CT stand-in), sends the first `--cases` MSD
Task04 hippocampus test images (raw) and the synthetic CT (raw, and as a DICOM series of one
instance per slice), and stores every mask (bool, by case and class) with its score and voxel
count. Run it in two checkouts (before: a `git
worktree` with VISION_MODELS=/work/main/models) and `compare` the files: the number of voxels
that differ per mask and the largest score change. Case names are file names, not patients.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.serving import HOST, free_port, server_process
from bench.volume import CT_MODEL, CT_SPACING, ct_series, synthetic_ct, write_repository
from serving.client import VisionClient


def _hippocampus_cases(count: int) -> list[tuple[str, tuple]]:
    from vision.volume.sources import volume_from_nifti

    folder = Path(__file__).resolve().parents[1].parent / "shared/datasets/hippocampus/imagesTs"
    cases = []
    for path in sorted(folder.glob("*.nii.gz"))[:count]:
        volume = volume_from_nifti(path)
        direction = tuple(np.asarray(volume.direction).ravel())
        payload = (volume.voxels.astype(np.float32), volume.spacing_mm, volume.origin_mm, direction)
        cases.append((path.name.split(".")[0], payload))
    return cases


def _segment(address: str, cases: int, ct_slices: int) -> dict[str, np.ndarray]:
    """Every case's masks (bool [D, H, W]), scores and voxel counts, keyed case/class."""
    stored: dict[str, np.ndarray] = {}
    with VisionClient(address, timeout_s=600) as client:
        work = [("hippocampus", name, p) for name, p in _hippocampus_cases(cases)]
        ct = synthetic_ct(ct_slices)
        work.append((CT_MODEL, "ct", (ct, CT_SPACING)))
        work.append((CT_MODEL, "ct-series", ct_series(ct)))  # the same CT as DICOM instances
        for model, name, payload in work:
            response = client.segment_volume(model, payload)
            for mask in response.masks:
                key = f"{name}/{mask.class_id}"
                stored[key] = VisionClient.volume_mask(mask, response.shape)
                stored[f"{key}/score"] = np.float64(mask.score)
                stored[f"{key}/voxels"] = np.int64(mask.voxel_count)
    return stored


def write(out: Path, cases: int, ct_slices: int) -> None:
    """Serve the repository, segment the cases, store the masks in `out` (npz)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = write_repository(root / "models")
        if "hippocampus" not in names:
            raise SystemExit("models/hippocampus absent: nothing to compare")
        port = free_port()
        command = [sys.executable, "-m", "app", "serve", "--models", str(root / "models")]
        command += ["--host", HOST, "--grpc-port", str(port), "--http-port", "-1"]
        with server_process("vision", command, port, names, root / "server.log") as server:
            stored = _segment(server.address, cases, ct_slices)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **stored)
    print(f"written: {out} ({sum(1 for k in stored if k.count('/') == 1)} masks)")


def compare(before: Path, after: Path) -> int:
    """Print per mask the voxels that differ and the score change; 1 when any mask differs."""
    a, b = np.load(before), np.load(after)
    masks = sorted({k for k in (*a.files, *b.files) if k.count("/") == 1})
    differing = 0
    for key in masks:
        if key not in a.files or key not in b.files:
            print(f"{key:24} only in {'after' if key in b.files else 'before'}")
            differing += 1
            continue
        voxels = int(np.count_nonzero(a[key] != b[key]))
        score = abs(float(a[f"{key}/score"]) - float(b[f"{key}/score"]))
        differing += voxels > 0
        count = int(a[f"{key}/voxels"])
        print(f"{key:24} voxels {count:9d}  differing {voxels:7d}  |d score| {score:.2e}")
    print(f"{len(masks)} masks, {differing} differ")
    return 1 if differing else 0


def main(argv: list[str] | None = None) -> int:
    """`write` or `compare` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("out", type=Path)
    w.add_argument("--cases", type=int, default=5)
    w.add_argument("--ct-slices", type=int, default=100)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args.out, args.cases, args.ct_slices)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    raise SystemExit(main())
