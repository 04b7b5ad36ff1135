"""Cases in the review database: creating one from a model's result, reading one back.

A case row holds the worklist columns (status, model, source, finding count, highest score,
age) and, as JSON, the image description, the model's labels and the patient attributes the
source carried (only then; never logged). Findings, masks, comments and the audit trail have
their tables; pixels, masks and heat maps are files (`review/images.py`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from review.db import Database
from review.images import CaseFiles, heat_png, mask_png, render_png

SOURCES = ("dicom", "line", "upload", "api")
KINDS = ("detection", "segmentation")


class CaseNotFoundError(KeyError):
    """No case (or finding) with that id."""


@dataclass
class FindingDraft:
    """A model's finding: label, score, box (x0, y0, x1, y1 pixels), heat map, frame index."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    heat: np.ndarray | None = None
    frame: int = 0  # 0-based index into the case's frames


@dataclass
class ImageInfo:
    """How the case's pixels are stored and should be shown."""

    width: int
    height: int
    frames: int = 1
    channels: int = 1
    dtype: str = "uint8"
    dicom: bool = False
    window: tuple[float, float] | None = None  # center, width
    presets: list[dict[str, Any]] = field(default_factory=list)
    study_uid: str | None = None
    invert: bool = False  # MONOCHROME1 values kept as stored: low values are shown white

    def to_json(self) -> dict[str, Any]:
        """The `image` object of the case API."""
        window = {"center": self.window[0], "width": self.window[1]} if self.window else None
        return {
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "dicom": self.dicom,
            "dtype": self.dtype,
            "channels": self.channels,
            "window": window,
            "presets": self.presets,
            "study_uid": self.study_uid,
            "invert": self.invert,
        }


@dataclass
class CaseDraft:
    """Everything needed to record a case: the result, the image and where it came from."""

    model: str
    model_version: str
    source: str
    kind: str
    labels: list[str]
    frames: np.ndarray  # F x H x W [x C], uint8 / uint16 / int16
    info: ImageInfo
    findings: list[FindingDraft] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # label -> H x W bool, frame 0
    frame_masks: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # frames 1..
    mask_scores: dict[str, float] = field(default_factory=dict)  # label -> the mask's score
    image_score: float | None = None
    patient: dict[str, str] | None = None
    source_dicom: bytes | None = None
    source_series: list[bytes] = field(default_factory=list)  # a node series' instances

    @property
    def max_score(self) -> float:
        """The highest finding (or mask) score; 0 when none."""
        scores = [f.score for f in self.findings] + list(self.mask_scores.values())
        return float(max(scores, default=0.0))


def _insert_case(conn: sqlite3.Connection, draft: CaseDraft, now: float) -> int:
    count = len(draft.findings) if draft.kind == "detection" else len(draft.masks)
    cursor = conn.execute(
        "INSERT INTO cases (status, model, model_version, source, kind, finding_count, "
        "max_score, image_score, created_at, updated_at, labels, image, patient) "
        "VALUES ('new', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            draft.model,
            draft.model_version,
            draft.source,
            draft.kind,
            count,
            draft.max_score,
            draft.image_score,
            now,
            now,
            json.dumps(draft.labels),
            json.dumps(draft.info.to_json()),
            json.dumps(draft.patient) if draft.patient else None,
        ),
    )
    return int(cursor.lastrowid)


def _insert_finding(
    conn: sqlite3.Connection, case_id: int, finding: FindingDraft, model: str
) -> int:
    x0, y0, x1, y1 = (float(v) for v in finding.box)
    cursor = conn.execute(
        "INSERT INTO findings (case_id, label, score, x0, y0, x1, y1, origin, status, "
        "has_heatmap, ai_label, ai_box, labelled_by, frame) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'ai', 'pending', ?, ?, ?, ?, ?)",
        (
            case_id,
            finding.label,
            float(finding.score),
            x0,
            y0,
            x1,
            y1,
            int(finding.heat is not None),
            finding.label,
            json.dumps([x0, y0, x1, y1]),
            model,
            int(finding.frame),
        ),
    )
    return int(cursor.lastrowid)


def mask_name(labels: list[str], label: str, origin: str, frame: int = 0) -> str:
    """The file name of a case's mask for `label` by `origin` on `frame` (frame 0: the old name)."""
    suffix = f"-f{frame}" if frame else ""
    return f"mask-{origin}-{labels.index(label)}{suffix}.png"


class CaseStore:
    """Creates and reads cases; files under `root/cases/`, rows in the database."""

    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = Path(root)

    def files(self, case_id: int) -> CaseFiles:
        """The folder of case `case_id`."""
        return CaseFiles(self.root, case_id)

    def create(self, draft: CaseDraft) -> int:
        """Record a case and its files in one transaction; returns its id."""
        with self.db.write() as conn:
            case_id = _insert_case(conn, draft, time.time())
            files = self.files(case_id)
            files.write_pixels(draft.frames)
            files.gzip_frame(0)  # the page's first download, ready before it asks
            window = draft.info.window
            files.write("image.png", render_png(draft.frames[0], window, draft.info.invert))
            if draft.source_dicom is not None:
                files.write("source.dcm", draft.source_dicom)
            for index, data in enumerate(draft.source_series):
                files.write(f"source-{index}.dcm", data)
            for finding in draft.findings:
                model = f"model {draft.model} {draft.model_version}"
                finding_id = _insert_finding(conn, case_id, finding, model)
                if finding.heat is not None:
                    files.write(f"heat-{finding_id}.png", heat_png(finding.heat))
            _write_masks(conn, files, case_id, draft)
        return case_id

    def row(self, conn: sqlite3.Connection, case_id: int) -> sqlite3.Row:
        """The case row; CaseNotFoundError when there is none."""
        row = conn.execute("SELECT * FROM cases WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise CaseNotFoundError(f"no case {case_id}")
        return row

    def case(self, conn: sqlite3.Connection, case_id: int) -> dict[str, Any]:
        """The case as the API shows it (see docs/review-api.md)."""
        row = self.row(conn, case_id)
        findings = conn.execute(
            "SELECT * FROM findings WHERE case_id = ? ORDER BY id", (case_id,)
        ).fetchall()
        masks = conn.execute(
            "SELECT label, origin FROM masks WHERE case_id = ? ORDER BY label, origin", (case_id,)
        ).fetchall()
        comments = conn.execute(
            "SELECT user, time, text FROM comments WHERE case_id = ? ORDER BY id", (case_id,)
        ).fetchall()
        return {
            "id": row["id"],
            "status": row["status"],
            "model": row["model"],
            "model_version": row["model_version"],
            "source": row["source"],
            "kind": row["kind"],
            "image_score": row["image_score"],
            "reviewer": row["reviewer"],
            "created_at": row["created_at"],
            "patient": json.loads(row["patient"]) if row["patient"] else {},
            "image": json.loads(row["image"]),
            "findings": [finding_json(f) for f in findings],
            "masks": [{"label": m["label"], "origin": m["origin"]} for m in masks],
            "labels": json.loads(row["labels"]),
            "comments": [dict(c) for c in comments],
        }

    def current_mask(
        self, conn: sqlite3.Connection, case_id: int, label: str, frame: int = 0
    ) -> bytes | None:
        """The mask PNG shown for `label` on `frame`: the human one when painted, else the AI."""
        row = self.row(conn, case_id)
        labels = json.loads(row["labels"])
        if label not in labels:
            return None
        files = self.files(case_id)
        for origin in ("human", "ai"):
            data = files.read(mask_name(labels, label, origin, frame))
            if data is not None:
                return data
        return None


def _write_masks(
    conn: sqlite3.Connection, files: CaseFiles, case_id: int, draft: CaseDraft
) -> None:
    """The AI masks of every frame: one row per label, one file per label and frame."""
    masks = {(0, label): mask for label, mask in draft.masks.items()} | draft.frame_masks
    for (frame, label), mask in sorted(masks.items()):
        conn.execute(
            "INSERT OR IGNORE INTO masks (case_id, label, origin) VALUES (?, ?, 'ai')",
            (case_id, label),
        )
        files.write(mask_name(draft.labels, label, "ai", frame), mask_png(mask))


def finding_json(row: sqlite3.Row) -> dict[str, Any]:
    """A finding row as the API shows it."""
    return {
        "id": row["id"],
        "label": row["label"],
        "score": row["score"],
        "box": [row["x0"], row["y0"], row["x1"], row["y1"]],
        "origin": row["origin"],
        "status": row["status"],
        "reason": row["reason"],
        "has_heatmap": bool(row["has_heatmap"]),
        "labelled_by": row["labelled_by"],
        "reviewed_by": row["reviewed_by"],
        "frame": row["frame"],
    }
