"""What de-identification costs the model: each medical reference model on original and
de-identified copies of the same DICOM objects, through the server's decode path.

retina-vessels: the DRIVE test images as Ophthalmic Photography, Dice against the 1st_manual masks
inside the FOV; blood-cells: the BCCD test split as VL Microscopic, mAP@0.5 (pycocotools). Both
copies go through `vision.io.decode_dataset` and `LoadedModel.predict`. hippocampus: its test
split (models/hippocampus/splits.json) rendered as MR series (one instance per slice, the NIfTI
geometry, identifiers added), Dice per label (MONAI) of the served volumetric path (series
assembly, test-time mirroring, sliding window over ONNX) on both copies; skipped without a model
version. The de-identified copy is written and read back (as it would leave the hospital).
Expected: no change — the profile removes or replaces attributes, never MR voxels (no burned-in
region is configured) — and `pixels` counts the objects whose pixels, and for hippocampus the
assembled volume, are identical to the original's.

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


def _mr_series(volume, name: str) -> list[Dataset]:
    """A NIfTI case as an MR series (one instance per slice, its geometry), carrying identifiers
    for de-identification to remove. Integer cases are stored as they are; float cases as int16
    with a RescaleSlope of max/30000 (rounding error at most 1/60000 of the case's maximum)."""
    from tests.serving.volume_series import mr_series

    values = volume.voxels
    integral = bool(np.array_equal(values, np.rint(values))) and values.max() < 32768
    slope = 1.0 if integral else float(values.max()) / 30000.0
    datasets = mr_series(
        np.rint(values / slope).astype(np.int16),
        volume.spacing_mm,
        volume.origin_mm,
        np.asarray(volume.direction)[:2],
        description=f"T1 hippocampus {name}",
    )
    for ds in datasets:
        ds.PatientName, ds.PatientID = f"Case^{name}", f"MRN-{name}"
        ds.PatientBirthDate, ds.InstitutionName = "19580417", "Test Hospital"
        ds.ReferringPhysicianName, ds.OperatorsName = "Referring^Doctor", "Operator^MR"
        ds.RescaleSlope = f"{slope:.10g}"
    return datasets


def hippocampus(repo: Path, limit: int) -> list[dict]:
    """Dice per label of the hippocampus model (as served: its test-time mirroring and
    orientation) on MR series rendered from the test split and on their de-identified copies,
    each assembled with `vision.volume.volume_from_datasets`. De-identification only changes
    attributes: the test below checks that the assembled voxels are the same."""
    from vision.segment3d.data import dataset_root
    from vision.segment3d.evaluate import OnnxVolumeSegmenter, case_metrics
    from vision.volume.series import volume_from_datasets
    from vision.volume.sources import volume_from_nifti

    model_dir, root = repo / "hippocampus", dataset_root()
    names = json.loads((model_dir / "splits.json").read_text())["splits"]["test"][: limit or None]
    segmenter = OnnxVolumeSegmenter(model_dir)
    n_labels = len(segmenter.config.labels)
    dice: dict[str, list] = {"original": [], "deid": []}
    identical = changed = 0
    rendering = 0.0  # the largest |series voxel - NIfTI voxel| (the slope's rounding)
    for name in names:
        source = volume_from_nifti(root / "imagesTr" / f"{name}.nii.gz")
        truth = np.rint(volume_from_nifti(root / "labelsTr" / f"{name}.nii.gz").voxels)
        series = _mr_series(source, name)
        pairs = [_pair(ds) for ds in series]
        original = volume_from_datasets([p[0] for p in pairs])
        deid = volume_from_datasets([p[1] for p in pairs])
        identical += all(p[2] for p in pairs) and np.array_equal(original.voxels, deid.voxels)
        rendering = max(rendering, float(np.abs(original.voxels - source.voxels).max()))
        a, b = segmenter.labels_of(original), segmenter.labels_of(deid)
        changed += int(np.count_nonzero(a != b))
        for key, labels in (("original", a), ("deid", b)):
            metrics = case_metrics(labels, truth.astype(np.int64), source.spacing_mm, n_labels)
            dice[key].append(metrics["dice"])
    rows = []
    for i, label in enumerate(segmenter.config.labels[1:]):
        values = {k: float(np.mean([d[i] for d in v])) for k, v in dice.items()}
        metric = f"Dice {label} (test, MR series)"
        row = _row("hippocampus", metric, values, len(names), identical, changed)
        rows.append({**row, "rendering_max_abs_error": round(rendering, 4)})
    return rows


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
    if any((args.models / "hippocampus").glob("*/model.onnx")):
        rows += hippocampus(args.models, args.limit)
    else:
        skipped.append("hippocampus: models/hippocampus has no model version")
    print(f"{'model':16} {'metric':34} {'n':>4} {'original':>9} {'deid':>9} {'change':>9} pixels")
    for r in rows:
        print(
            f"{r['model']:16} {r['metric']:34} {r['objects']:>4} {r['original']:9.4f} "
            f"{r['deidentified']:9.4f} {r['change']:+9.4f} {r['pixels_identical']}"
        )
    for line in skipped:
        print(f"skipped {line}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
