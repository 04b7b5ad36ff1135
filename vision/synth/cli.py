"""`vision synth`: write a synthetic rare-class dataset (images, labels, provenance, sheet)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vision.datasets.locations import dataset_dir
from vision.errors import ConfigError
from vision.synth.dataset import (
    DATASETS,
    GENERATORS,
    contact_sheet,
    generate,
    load_sources,
    paste_config,
    write_all,
)
from vision.synth.distribution import save_fits

SHEET_SAMPLES = 16


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision synth", description=__doc__)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--classes", required=True, help="comma-separated rare classes, e.g. Fray,Crack")
    p.add_argument("--count", type=int, required=True, help="number of images to generate")
    p.add_argument("--generator", default="copy-paste", choices=GENERATORS)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="dataset folder (default: the shared datasets)")
    p.add_argument("--split", default="", help="source split (default: the training split)")
    p.add_argument("--per-image", type=int, default=1, help="instances per image: 1..N")
    p.add_argument("--blend", choices=("poisson", "alpha"), default="")
    p.add_argument(
        "--foreground",
        choices=("grabcut", "otsu"),
        default="grabcut",
        help="box foreground estimate (bccd)",
    )
    p.add_argument("--max-source-images", type=int, default=300, help="0 = all")
    p.add_argument("--no-fit", action="store_true", help="fixed ranges instead of fitted stats")
    return p


def synth(argv: list[str]) -> int:
    """Run `vision synth` with its own arguments; returns an exit code."""
    a = _parser().parse_args(argv)
    if a.generator == "procedural" and a.dataset != "magnetic-tile":
        raise ConfigError("--generator procedural makes segmentation defects: use magnetic-tile")
    classes = tuple(c.strip() for c in a.classes.split(",") if c.strip())
    root = dataset_dir(a.dataset, a.data)
    out = Path(a.out)
    started = time.perf_counter()
    src = load_sources(a.dataset, root, classes, a.split, a.max_source_images, a.seed, a.foreground)
    counts = {c: len(v) for c, v in src.instances.items()}
    print(
        f"sources: {counts} instances, {len(src.backgrounds)} backgrounds "
        f"({time.perf_counter() - started:.1f}s)",
        flush=True,
    )
    save_fits(out / "fit.json", src.fits)
    options = {"fit": not a.no_fit, "paste": paste_config(a.dataset, a.blend)}
    stream = generate(src, a.generator, a.count, a.seed, per_image=a.per_image, **options)
    written = write_all(out, src, stream, a.count, SHEET_SAMPLES)
    names, failed, seconds = written.names, written.failed, written.seconds
    if written.samples:
        contact_sheet(written.samples, classes, out / "contact_sheet.png")
    rate = len(names) / seconds if seconds > 0 else 0.0
    summary = {
        "dataset": a.dataset,
        "generator": a.generator,
        "classes": list(classes),
        "requested": a.count,
        "written": len(names),
        "failed": failed,
        "seed": a.seed,
        "source_instances": counts,
        "backgrounds": len(src.backgrounds),
        "seconds": round(seconds, 2),
        "images_per_second": round(rate, 2),
        "argv": list(argv),
    }
    (out / "synth.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {len(names)} images ({failed} failed) to {out}: {rate:.2f} images/s")
    return 0 if names else 1


if __name__ == "__main__":
    import sys

    raise SystemExit(synth(sys.argv[1:]))
