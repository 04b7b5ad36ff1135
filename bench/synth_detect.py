"""What the real-vs-synthetic check costs per image, side by side in one run.

    .venv/bin/python -m bench.synth_detect --detector OUT/detector.onnx --images DIR

Paths, on the same decoded grey images (1 onnxruntime thread, rounds interleaved):
1. `Detector.probability`: the four stride-aligned corner views, each averaged over its flips
   in the graph (the check as shipped);
2. the same graph on the whole image once (one view: what the views cost).
Printed: images per second and ms per image of each, and their ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vision.synth_detect.detector import Detector, canonical, folder_items, load_grey


def _whole_image(detector: Detector):
    def run(pixels: np.ndarray) -> float:
        return detector.max_logit(canonical(pixels, detector.quality)[None])

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.synth_detect", description=__doc__)
    p.add_argument("--detector", required=True, help="detector.onnx")
    p.add_argument("--images", nargs="+", required=True, help="folders of images")
    p.add_argument("--limit", type=int, default=120)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    items = folder_items([Path(f) for f in a.images])[: a.limit]
    pixels = [load_grey(it.path) for it in items]
    detector = Detector(a.detector, threads=1)
    paths = {"views x flips (check)": detector.probability, "whole image": _whole_image(detector)}
    seconds = {name: [] for name in paths}
    for r in range(a.rounds):
        for name in paths if r % 2 == 0 else reversed(paths):
            paths[name](pixels[0])
            start = time.perf_counter()
            for image in pixels:
                paths[name](image)
            seconds[name].append((time.perf_counter() - start) / len(pixels))
    sides = np.mean([im.shape for im in pixels], axis=0)
    print(f"{len(pixels)} images, mean {sides[0]:.0f} x {sides[1]:.0f} px, 1 thread")
    for name, s in seconds.items():
        print(f"{name:<24} {1 / np.median(s):7.1f} images/s  {1000 * np.median(s):6.1f} ms/image")
    ratio = np.median(seconds["views x flips (check)"]) / np.median(seconds["whole image"])
    print(f"check / whole image: {ratio:.2f}x the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
