"""What de-identification costs the model: each medical reference model on original and
de-identified copies of the same DICOM objects, through the server's decode path.

retina-vessels: the DRIVE test images as Ophthalmic Photography, Dice against the 1st_manual masks
inside the FOV; blood-cells: the BCCD test split as VL Microscopic, mAP@0.5 (pycocotools);
hippocampus: skipped unless `models/hippocampus/config.yaml` exists (it is trained separately).
Both copies go through `vision.io.decode_dataset` and `LoadedModel.predict`; the de-identified one
is written and read back (as it would leave the hospital). Expected: no change, pixels identical.

    .venv/bin/python -m bench.deid_cost [--limit N] [--json reports/deid_cost.json]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from tests.dicom_node.wrap import DATASETS, Study, load_rgb, ophthalmic_photo, vl_microscopic
from vision.datasets.detection import load_voc
from vision.datasets.segmentation import load_drive
from vision.deid import DeidOptions, deidentify
from vision.detect.evaluate import EVAL_SCORE_THRESHOLD
from vision.detect.metrics import Boxes, coco_map
from vision.io import decode_dataset
from vision.loader import LoadedModel, load_model
from vision.paths import default_repository
from vision.segment.metrics import dice_iou

KEY = bytes(32)  # a fixed bench key: the figures do not depend on it


def _round_trip(ds: Dataset) -> Dataset:
    """`ds` de-identified, written and read back."""
    out = deidentify(ds, DeidOptions(), KEY).dataset
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _pair(ds: Dataset) -> tuple[Dataset, Dataset, bool]:
    deid = _round_trip(ds)
    same = deid.PixelData == ds.PixelData and np.array_equal(deid.pixel_array, ds.pixel_array)
    return ds, deid, bool(same)


def _vessels(model: LoadedModel, ds: Dataset) -> np.ndarray:
    result = model.predict(decode_dataset(ds))
    return next(m.mask for m in result.masks if m.label == "vessel")


def retina(repo: Path, limit: int) -> dict:
    """Dice (pooled in the FOV) of retina-vessels on original and de-identified OP objects."""
    model = load_model(repo / "retina-vessels", providers=("cpu",))
    samples = load_drive(DATASETS / "drive" / "DRIVE", "test")[: limit or None]
    study, preds, identical, changed = Study(), {"original": [], "deid": []}, 0, 0
    for sample in samples:
        original, deid, same = _pair(ophthalmic_photo([sample.image], study))
        identical += same
        a, b = _vessels(model, original), _vessels(model, deid)
        changed += int(np.count_nonzero(a != b))
        preds["original"].append(a[sample.fov])
        preds["deid"].append(b[sample.fov])
    truth = np.concatenate([(s.mask > 0)[s.fov] for s in samples])
    dice = {k: dice_iou(np.concatenate(v), truth)[0] for k, v in preds.items()}
    return _row("retina-vessels", "Dice (DRIVE test, FOV)", dice, len(samples), identical, changed)


def _boxes(model: LoadedModel, ds: Dataset) -> Boxes:
    dets = model.predict(decode_dataset(ds)).detections
    return Boxes(
        np.array([[d.x1, d.y1, d.x2, d.y2] for d in dets], np.float64).reshape(-1, 4),
        np.array([d.class_id for d in dets], np.int64),
        np.array([d.score for d in dets], np.float64),
    )


def cells(repo: Path, limit: int) -> dict:
    """mAP@0.5 of blood-cells on original and de-identified VL Microscopic objects."""
    model = load_model(repo / "blood-cells", providers=("cpu",))
    model = model.with_postprocess(score_threshold=EVAL_SCORE_THRESHOLD)
    labels = tuple(model.config.labels)
    samples, _ = load_voc(DATASETS / "bccd" / "BCCD", "test", labels)
    samples = samples[: limit or None]
    study, preds, truths, identical, changed = Study(), {"original": [], "deid": []}, [], 0, 0
    for sample in samples:
        original, deid, same = _pair(vl_microscopic(load_rgb(sample.image), study))
        identical += same
        a, b = _boxes(model, original), _boxes(model, deid)
        changed += int(
            not (np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores))
        )
        preds["original"].append(a)
        preds["deid"].append(b)
        truths.append(
            Boxes(
                np.asarray(sample.boxes, np.float64).reshape(-1, 4),
                np.asarray(sample.labels, np.int64),
                np.ones(len(sample.labels)),
            )
        )
    ap = {k: coco_map(v, truths, labels)["map50"] for k, v in preds.items()}
    return _row("blood-cells", "mAP@0.5 (BCCD test)", ap, len(samples), identical, changed)


def _row(model: str, metric: str, values: dict, n: int, identical: int, changed: int) -> dict:
    return {
        "model": model,
        "metric": metric,
        "objects": n,
        "original": round(float(values["original"]), 6),
        "deidentified": round(float(values["deid"]), 6),
        "change": round(float(values["deid"] - values["original"]), 6),
        "pixels_identical": f"{identical}/{n}",
        "outputs_differing": changed,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the models, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=default_repository())
    p.add_argument("--limit", type=int, default=0, help="objects per model (0: all)")
    p.add_argument("--json", type=Path, default=Path("reports/deid_cost.json"))
    args = p.parse_args(argv)
    rows = [retina(args.models, args.limit), cells(args.models, args.limit)]
    skipped = []
    if not (args.models / "hippocampus" / "config.yaml").is_file():
        skipped.append("hippocampus: models/hippocampus has no config.yaml yet (being trained)")
    print(f"{'model':16} {'metric':26} {'n':>4} {'original':>9} {'deid':>9} {'change':>9} pixels")
    for r in rows:
        print(
            f"{r['model']:16} {r['metric']:26} {r['objects']:>4} {r['original']:9.4f} "
            f"{r['deidentified']:9.4f} {r['change']:+9.4f} {r['pixels_identical']}"
        )
    for line in skipped:
        print(f"skipped {line}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
