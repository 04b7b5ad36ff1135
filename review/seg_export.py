"""Reviewed DICOM cases as DICOM SEG (highdicom): one BINARY SEG per case, a segment per label.

Only cases whose DICOM files the tool kept (uploads: `source.dcm`; DICOM node series:
`source-<i>.dcm`, one per instance) can be referenced by a SEG; others are listed in the
manifest as skipped. A segmentation case's segments are its final masks (painted
over AI); a detection case's are its reviewed boxes, filled. A segment is MANUAL when a human
drew it (a painted mask, a box added or moved), else AUTOMATIC with the model as algorithm.
The review status and reviewer are in ContentDescription / ContentCreatorName and the series
description. A series' boxes mark the frame they were found on; masks cover every frame.
"""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.coding import Code

from review.export import final_masks, truth_findings
from review.store import CaseStore

_CATEGORY = Code("49755003", "SCT", "Morphologically altered structure")
_TYPE = Code("49755003", "SCT", "Morphologically altered structure")
_AI = hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence")


def _box_masks(rows: list[sqlite3.Row], shape: tuple[int, int, int]) -> dict[str, tuple]:
    """label -> (filled boxes F x H x W, origin: human when any box was drawn or moved)."""
    found: dict[str, tuple[np.ndarray, str]] = {}
    for row in rows:
        mask, origin = found.get(row["label"], (np.zeros(shape, bool), "ai"))
        x0, y0 = int(np.floor(row["x0"])), int(np.floor(row["y0"]))
        x1, y1 = int(np.ceil(row["x1"])), int(np.ceil(row["y1"]))
        frame = min(max(int(row["frame"] or 0), 0), shape[0] - 1)
        mask[frame, max(y0, 0) : y1, max(x0, 0) : x1] = True
        human = row["origin"] == "human" or row["status"] == "corrected"
        found[row["label"]] = (mask, "human" if human else origin)
    return found


def _segment(number: int, label: str, origin: str, case: sqlite3.Row) -> hd.seg.SegmentDescription:
    manual = origin == "human"
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label[:64],
        segmented_property_category=_CATEGORY,
        segmented_property_type=Code(label[:16] or "finding", "99VISION", label[:64] or "finding"),
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.MANUAL
            if manual
            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ),
        algorithm_identification=None
        if manual
        else hd.AlgorithmIdentificationSequence(
            name=case["model"][:64], family=_AI, version=case["model_version"][:64]
        ),
    )


def _frame_masks(store: CaseStore, conn, case: sqlite3.Row, shape: tuple) -> dict[str, tuple]:
    """label -> (F x H x W mask, origin): every frame's final mask; human if any was painted."""
    found: dict[str, tuple] = {}
    for frame in range(min(shape[0], int(json.loads(case["image"]).get("frames", 1) or 1))):
        for label, (mask, origin) in final_masks(store, conn, case, frame).items():
            planes, seen = found.get(label, (np.zeros(shape, bool), origin))
            planes[frame] = mask
            found[label] = (planes, "human" if "human" in (origin, seen) else origin)
    return found


def case_seg(store: CaseStore, conn: sqlite3.Connection, case: sqlite3.Row) -> bytes | None:
    """The case's SEG as Part 10 bytes, or None when it has no DICOM file or nothing to mark."""
    sources = source_datasets(store, case["id"])
    if not sources:
        return None
    info = json.loads(case["image"])
    frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in sources)
    if case["kind"] == "segmentation":
        masks = _frame_masks(store, conn, case, (frames, info["height"], info["width"]))
    else:
        shape = (frames, info["height"], info["width"])
        masks = _box_masks(truth_findings(conn, case["id"]), shape)
    masks = {label: part for label, part in masks.items() if part[0].any()}
    if not masks:
        return None
    labels = sorted(masks)
    planes = np.stack([masks[label][0] for label in labels], axis=-1)
    if planes.shape[0] < frames:
        missing = np.zeros((frames - planes.shape[0], *planes.shape[1:]), bool)
        planes = np.concatenate([planes, missing])
    planes = _referable(sources, planes)
    status, reviewer = case["status"], case["reviewer"] or "unknown"
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=planes.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _segment(i + 1, label, masks[label][1], case) for i, label in enumerate(labels)
        ],
        series_instance_uid=hd.UID(),
        series_number=902,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="vision-serving review",
        manufacturer_model_name=case["model"][:64],
        software_versions=case["model_version"][:64],
        device_serial_number="review",
        content_description=f"review {status}"[:64],
        content_creator_name=reviewer[:63] if "^" in reviewer else f"{reviewer[:63]}^",
        content_label="REVIEWED",
        series_description=f"{case['model']} review {status} by {reviewer}"[:64],
        omit_empty_frames=False,
    )
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _referable(sources: list[pydicom.Dataset], planes: np.ndarray) -> np.ndarray:
    """The planes a SEG can reference: a multi-frame source without per-frame positions (a
    legacy multi-frame CT, say) is one plane to highdicom, so only its first frame's marks."""
    legacy = len(sources) == 1 and "PerFrameFunctionalGroupsSequence" not in sources[0]
    if not legacy or planes.shape[0] == 1:
        return planes
    if planes[1:].any():
        raise ValueError("marks after the first frame of a multi-frame file without per-frame "
                         "positions cannot be referenced by a SEG")  # fmt: skip
    return planes[:1]


def source_datasets(store: CaseStore, case_id: int) -> list[pydicom.Dataset]:
    """The DICOM files a case kept: `source.dcm`, else `source-0.dcm`, `source-1.dcm`, ..."""
    files = store.files(case_id)
    data = files.read("source.dcm")
    if data is not None:
        return [pydicom.dcmread(io.BytesIO(data))]
    found, index = [], 0
    while (data := files.read(f"source-{index}.dcm")) is not None:
        found.append(pydicom.dcmread(io.BytesIO(data)))
        index += 1
    return found


def write_segs(zf: zipfile.ZipFile, store: CaseStore, conn, cases: list) -> tuple[dict, list]:
    """`seg/case-<id>.dcm` per DICOM case; (segments per case, skipped cases with why)."""
    details: dict[int, Any] = {}
    skipped: list[dict[str, Any]] = []
    for case in cases:
        try:
            blob = case_seg(store, conn, case)
        except ValueError as error:  # highdicom's checks; no patient attribute in them
            skipped.append({"id": case["id"], "why": f"no SEG: {error}"})
            continue
        if blob is None:
            why = "no DICOM file kept" if case["source"] == "api" else "no DICOM or no mark"
            skipped.append({"id": case["id"], "why": why})
            continue
        zf.writestr(f"seg/case-{case['id']}.dcm", blob)
        details[case["id"]] = "seg"
    return details, skipped
