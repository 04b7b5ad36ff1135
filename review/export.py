"""Reviewed cases as training data that `vision train --data` reads unchanged.

- `coco`: `annotations.json` (boxes x, y, w, h) + `images/`:
  `vision train --task detection --format coco --data EXPORT/annotations.json --val-split ''`.
- `voc`: `JPEGImages/`, `Annotations/`, `ImageSets/Main/train.txt`:
  `vision train --task detection --format voc --data EXPORT --val-split ''`.
- `masks`: `images/` + `masks/` (same stem, 0/255, every non-background label) and
  `masks_by_label/<label>/`: `vision train --images EXPORT/images --masks EXPORT/masks`.
- `dicom-seg`: one DICOM SEG per DICOM case (`review/seg_export.py`).

The truth is the reviewed result: accepted and corrected findings (their final label and box),
human additions, painted masks over the AI ones; rejected findings and rejected cases are left
out. Each annotation says its `origin` (ai | human), `review_status` and `reviewer`;
`manifest.json` lists every selected case, its status and reviewer. A multi-frame case (a
multi-frame upload, a DICOM node series) gives one image per frame (`case-<id>-f<k>.png` after
the first, COCO images with `case_id` and `frame`), each with the boxes found on it; masks
exports hold every frame's masks (`case-<id>-f<k>`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree import ElementTree as ET

import numpy as np

from review.images import mask_png, read_png, render_png
from review.store import CaseStore, mask_name

FORMATS = ("coco", "voc", "masks", "dicom-seg")
TRUTH = ("accepted", "corrected")


class ExportError(ValueError):
    """A bad export request (the message says what is accepted)."""


def parse_time(text: str, name: str) -> float | None:
    """Epoch seconds or an ISO 8601 date/time (UTC when no zone); None when empty."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"{name}: epoch seconds or an ISO date such as 2026-12-01") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


@dataclass(frozen=True)
class ExportOptions:
    """What to export: format, model, case statuses, creation period."""

    format: str = "coco"
    model: str = ""
    status: tuple[str, ...] = TRUTH
    since: float | None = None
    until: float | None = None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> ExportOptions:
        """From query parameters (format, model, status, since, until)."""
        fmt = params.get("format", "coco")
        if fmt not in FORMATS:
            raise ExportError(f"format: one of {', '.join(FORMATS)}")
        status = tuple(s for s in params.get("status", ",".join(TRUTH)).split(",") if s)
        bad = [s for s in status if s not in (*TRUTH, "rejected")]
        if bad:
            raise ExportError(f"status: {bad}: export accepted, corrected and/or rejected cases")
        return cls(
            fmt,
            params.get("model", ""),
            status,
            parse_time(params.get("since", ""), "since"),
            parse_time(params.get("until", ""), "until"),
        )


def select_cases(conn: sqlite3.Connection, options: ExportOptions) -> list[sqlite3.Row]:
    """The cases an export covers, oldest first."""
    clauses = [f"status IN ({','.join('?' * len(options.status))})"]
    args: list[Any] = list(options.status)
    if options.model:
        clauses.append("model = ?")
        args.append(options.model)
    if options.since is not None:
        clauses.append("created_at >= ?")
        args.append(options.since)
    if options.until is not None:
        clauses.append("created_at < ?")
        args.append(options.until)
    sql = f"SELECT * FROM cases WHERE {' AND '.join(clauses)} ORDER BY created_at, id"
    return conn.execute(sql, args).fetchall()


def truth_findings(conn: sqlite3.Connection, case_id: int) -> list[sqlite3.Row]:
    """The reviewed boxes of a case: accepted and corrected findings, AI and human."""
    return conn.execute(
        "SELECT * FROM findings WHERE case_id = ? AND status IN ('accepted', 'corrected') "
        "ORDER BY id",
        (case_id,),
    ).fetchall()


def final_masks(
    store: CaseStore, conn: sqlite3.Connection, case: sqlite3.Row, frame: int = 0
) -> dict:
    """label -> (mask bool H x W, origin) on `frame`: painted masks over AI ones; rejected
    labels left out."""
    labels = json.loads(case["labels"])
    rejected = {
        r["label"]
        for r in conn.execute(
            "SELECT label FROM findings WHERE case_id = ? AND status = 'rejected'", (case["id"],)
        )
    }
    files, found = store.files(case["id"]), {}
    rows = conn.execute("SELECT DISTINCT label FROM masks WHERE case_id = ?", (case["id"],))
    for (label,) in rows:
        for origin in ("human", "ai"):
            data = files.read(mask_name(labels, label, origin, frame))
            if data is None or (origin == "ai" and label in rejected):
                continue
            found[label] = (read_png(data) > 127, origin)
            break
    return found


def _stem(case: sqlite3.Row, frame: int = 0) -> str:
    return f"case-{case['id']}" if frame == 0 else f"case-{case['id']}-f{frame}"


def _image(store: CaseStore, case: sqlite3.Row, frame: int = 0) -> bytes:
    """Frame `frame` as the 8-bit PNG the page shows (frame 0 as stored with the case)."""
    files = store.files(case["id"])
    if frame == 0:
        return files.read("image.png") or b""
    info = json.loads(case["image"])
    window = (info["window"]["center"], info["window"]["width"]) if info["window"] else None
    return render_png(np.asarray(files.pixels()[frame]), window, bool(info.get("invert")))


def _frames(case: sqlite3.Row, rows: list[sqlite3.Row]) -> list[tuple[int, list[sqlite3.Row]]]:
    """Each frame of the case with its reviewed boxes (multi-frame cases: every frame)."""
    count = int(json.loads(case["image"]).get("frames", 1) or 1)
    return [(k, [r for r in rows if (r["frame"] or 0) == k]) for k in range(count)]


def _ann_fields(row: sqlite3.Row, case: sqlite3.Row) -> dict[str, Any]:
    return {
        "finding_id": row["id"],
        "origin": row["origin"],
        "review_status": row["status"],
        "case_status": case["status"],
        "reviewer": case["reviewer"],
        "labelled_by": row["labelled_by"],
        "reviewed_by": row["reviewed_by"],
        "score": row["score"] if row["origin"] == "ai" else None,
    }


def _categories(cases: list[sqlite3.Row]) -> list[str]:
    names: list[str] = []
    for case in cases:
        for label in json.loads(case["labels"]):
            if label not in names and label != "background":
                names.append(label)
    return names


def write_coco(zf: zipfile.ZipFile, store: CaseStore, conn, cases: list) -> dict[int, int]:
    """COCO instances JSON + images; returns annotations per case."""
    names = _categories(cases)
    images, annotations, counts = [], [], {}
    next_id = max((c["id"] for c in cases), default=0) + 1  # ids of frames after the first
    for case in cases:
        info = json.loads(case["image"])
        rows = truth_findings(conn, case["id"])
        counts[case["id"]] = len(rows)
        for frame, frame_rows in _frames(case, rows):
            image_id = case["id"] if frame == 0 else next_id
            next_id += frame != 0
            name = f"images/{_stem(case, frame)}.png"
            zf.writestr(name, _image(store, case, frame))
            images.append(
                {"id": image_id, "file_name": name, "width": info["width"],
                 "height": info["height"], "case_id": case["id"], "frame": frame,
                 "case_status": case["status"], "reviewer": case["reviewer"],
                 "model": case["model"], "model_version": case["model_version"],
                 "source": case["source"]}
            )  # fmt: skip
            annotations += _coco_annotations(frame_rows, case, image_id, names, len(annotations))
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    zf.writestr("annotations.json", json.dumps(coco, indent=1))
    return counts


def _coco_annotations(
    rows: list[sqlite3.Row], case: sqlite3.Row, image_id: int, names: list[str], first: int
) -> list[dict[str, Any]]:
    """COCO annotations of one image's boxes, numbered from `first + 1`."""
    found = []
    for row in rows:
        x0, y0, x1, y1 = row["x0"], row["y0"], row["x1"], row["y1"]
        found.append({
            "id": first + len(found) + 1, "image_id": image_id,
            "category_id": names.index(row["label"]) + 1,
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
            "iscrowd": 0, **_ann_fields(row, case),
        })  # fmt: skip
    return found


def _voc_xml(case: sqlite3.Row, rows: list[sqlite3.Row], info: dict, frame: int) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{_stem(case, frame)}.png"
    size = ET.SubElement(root, "size")
    for key, value in (
        ("width", info["width"]),
        ("height", info["height"]),
        ("depth", info["channels"]),
    ):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "review_status").text = case["status"]
    ET.SubElement(root, "reviewer").text = case["reviewer"] or ""
    for row in rows:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = row["label"]
        for key, value in _ann_fields(row, case).items():
            ET.SubElement(obj, key).text = "" if value is None else str(value)
        box = ET.SubElement(obj, "bndbox")
        for key in ("x0", "y0", "x1", "y1"):
            tag = {"x0": "xmin", "y0": "ymin", "x1": "xmax", "y1": "ymax"}[key]
            ET.SubElement(box, tag).text = f"{row[key]:.1f}"
    return ET.tostring(root, encoding="utf-8")


def write_voc(zf: zipfile.ZipFile, store: CaseStore, conn, cases: list) -> dict[int, int]:
    """Pascal VOC folders; returns annotations per case."""
    counts, stems = {}, []
    for case in cases:
        rows = truth_findings(conn, case["id"])
        counts[case["id"]] = len(rows)
        info = json.loads(case["image"])
        for frame, frame_rows in _frames(case, rows):
            stem = _stem(case, frame)
            stems.append(stem)
            zf.writestr(f"JPEGImages/{stem}.png", _image(store, case, frame))
            zf.writestr(f"Annotations/{stem}.xml", _voc_xml(case, frame_rows, info, frame))
    zf.writestr("ImageSets/Main/train.txt", "".join(f"{s}\n" for s in stems))
    return counts


def write_masks(zf: zipfile.ZipFile, store: CaseStore, conn, cases: list) -> dict[int, Any]:
    """images/ + masks/ (union of labels) + masks_by_label/; returns label origins per case."""
    origins = {}
    for case in cases:
        info, labelled = json.loads(case["image"]), {}
        for frame in range(int(info.get("frames", 1) or 1)):
            for label, origin in _write_frame_masks(zf, store, conn, case, frame).items():
                labelled[label] = "human" if "human" in (origin, labelled.get(label)) else origin
        origins[case["id"]] = labelled
    return origins


def _write_frame_masks(zf: zipfile.ZipFile, store: CaseStore, conn, case, frame: int) -> dict:
    """One frame's image, union mask and per-label masks (stem case-<id>[-f<k>])."""
    info, stem = json.loads(case["image"]), _stem(case, frame)
    found = final_masks(store, conn, case, frame)
    union = np.zeros((info["height"], info["width"]), bool)
    for label, (mask, _) in found.items():
        union |= mask
        zf.writestr(f"masks_by_label/{label}/{stem}.png", mask_png(mask))
    zf.writestr(f"images/{stem}.png", _image(store, case, frame))
    zf.writestr(f"masks/{stem}.png", mask_png(union))
    return {label: origin for label, (_, origin) in found.items()}


def _manifest(options: ExportOptions, cases: list, details: dict, skipped: list) -> dict:
    return {
        "format": options.format,
        "created_at": time.time(),
        "filter": {
            "model": options.model,
            "status": list(options.status),
            "since": options.since,
            "until": options.until,
        },  # fmt: skip
        "cases": [
            {
                "id": c["id"],
                "status": c["status"],
                "reviewer": c["reviewer"],
                "model": c["model"],
                "model_version": c["model_version"],
                "source": c["source"],
                "annotations": details.get(c["id"]),
            }  # fmt: skip
            for c in cases
        ],
        "skipped": skipped,
    }


def _seg_writer():
    try:
        from review.seg_export import write_segs
    except ImportError:
        raise ExportError(
            "format dicom-seg needs highdicom: install the dicom extra (pip install "
            "'vision-serving[dicom]')"
        ) from None
    return write_segs


def write_zip(store: CaseStore, options: ExportOptions, target: BinaryIO) -> None:
    """Write the export as a zip into `target` (see the module docstring for each layout)."""
    with store.db.connect() as conn, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        selected = select_cases(conn, options)
        cases = [c for c in selected if c["status"] != "rejected"]
        skipped = [{"id": c["id"], "why": "case rejected"} for c in selected if c not in cases]
        if options.format == "dicom-seg":
            write_segs = _seg_writer()

            details, more = write_segs(zf, store, conn, cases)
            skipped += more
        else:
            writer = {"coco": write_coco, "voc": write_voc, "masks": write_masks}[options.format]
            details = writer(zf, store, conn, cases)
        zf.writestr(
            "manifest.json", json.dumps(_manifest(options, selected, details, skipped), indent=1)
        )


def export_file(store: CaseStore, options: ExportOptions) -> Path:
    """The export as a zip file under the data dir's `exports/` (the caller deletes it)."""
    folder = store.root / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{options.format}-", suffix=".zip", dir=folder)
    try:
        with os.fdopen(handle, "wb") as target:
            write_zip(store, options, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)
