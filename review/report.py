"""How the model did against its reviewers: per-class precision and recall, with n.

Over the closed, not rejected cases (accepted, corrected) of a model — optionally one version,
one creation period — the model's findings as it made them (their original label and box) are
matched to the reviewed truth (accepted and corrected findings with their final label and box,
and human additions), per class and frame, greedily by IoU >= 0.5 in order of score. A
rejected finding is a false positive; a human addition a false negative; a moved box still
counts when it overlaps its original by the threshold. Segmentation cases also count pixels
per class: the AI mask against the final one (painted, else the AI mask; none when its
finding was rejected), summed over the cases and their frames (`pixel_precision`,
`pixel_recall`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np

from review.export import final_masks, parse_time
from review.images import read_png
from review.store import CaseStore, mask_name

IOU = 0.5


class ReportError(ValueError):
    """A bad report request."""


@dataclass(frozen=True)
class ReportOptions:
    """Which cases the report covers."""

    model: str
    version: str = ""
    since: float | None = None
    until: float | None = None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> ReportOptions:
        """From query parameters: model (required), version, since, until."""
        if not params.get("model"):
            raise ReportError("model: name the model to report on")
        try:
            since = parse_time(params.get("since", ""), "since")
            until = parse_time(params.get("until", ""), "until")
        except ValueError as exc:
            raise ReportError(str(exc)) from None
        return cls(params["model"], params.get("version", ""), since, until)


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(predicted: list[tuple[float, list[float]]], truth: list[list[float]]) -> int:
    """True positives: predictions (score, box) matched greedily, best score first."""
    used: set[int] = set()
    hits = 0
    for _, box in sorted(predicted, key=lambda p: -p[0]):
        best, best_iou = -1, IOU
        for i, other in enumerate(truth):
            overlap = iou(box, other)
            if i not in used and overlap >= best_iou:
                best, best_iou = i, overlap
        if best >= 0:
            used.add(best)
            hits += 1
    return hits


def _cases(conn: sqlite3.Connection, options: ReportOptions) -> list[sqlite3.Row]:
    clauses, args = ["model = ?", "status IN ('accepted', 'corrected')"], [options.model]
    for column, value, op in (
        ("model_version", options.version or None, "="),
        ("created_at", options.since, ">="),
        ("created_at", options.until, "<"),
    ):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            args.append(value)
    return conn.execute(f"SELECT * FROM cases WHERE {' AND '.join(clauses)}", args).fetchall()


def _tally(conn: sqlite3.Connection, case_id: int, counts: dict[str, dict[str, int]]) -> None:
    rows = conn.execute("SELECT * FROM findings WHERE case_id = ?", (case_id,)).fetchall()
    predicted: dict[tuple[str, int], list] = {}  # (label, frame): a box matches on its frame
    truth: dict[tuple[str, int], list] = {}
    for r in rows:
        frame = r["frame"] or 0
        if r["origin"] == "ai":
            box = (r["score"], json.loads(r["ai_box"]))
            predicted.setdefault((r["ai_label"], frame), []).append(box)
        if r["status"] in ("accepted", "corrected"):
            truth.setdefault((r["label"], frame), []).append([r["x0"], r["y0"], r["x1"], r["y1"]])
    for key in set(predicted) | set(truth):
        tp = match(predicted.get(key, []), truth.get(key, []))
        row = counts.setdefault(key[0], {"tp": 0, "fp": 0, "fn": 0})
        row["tp"] += tp
        row["fp"] += len(predicted.get(key, [])) - tp
        row["fn"] += len(truth.get(key, [])) - tp


def _pixels(store: CaseStore, conn: sqlite3.Connection, case: sqlite3.Row, counts: dict) -> None:
    """Add a segmentation case's per-class pixel overlaps (AI mask vs final mask), every frame."""
    for frame in range(int(json.loads(case["image"]).get("frames", 1) or 1)):
        _frame_pixels(store, conn, case, frame, counts)


def _frame_pixels(store: CaseStore, conn, case: sqlite3.Row, frame: int, counts: dict) -> None:
    labels = json.loads(case["labels"])
    final = final_masks(store, conn, case, frame)
    files = store.files(case["id"])
    for label in labels[1:]:
        data = files.read(mask_name(labels, label, "ai", frame))
        ai = read_png(data) > 127 if data is not None else None
        truth = final.get(label, (None, ""))[0]
        if ai is None and truth is None:
            continue
        ai = ai if ai is not None else np.zeros_like(truth)
        truth = truth if truth is not None else np.zeros_like(ai)
        row = counts.setdefault(label, {"tp": 0, "fp": 0, "fn": 0})
        row["tp"] += int(np.count_nonzero(ai & truth))
        row["fp"] += int(np.count_nonzero(ai & ~truth))
        row["fn"] += int(np.count_nonzero(~ai & truth))


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def build(store: CaseStore, options: ReportOptions) -> dict[str, Any]:
    """The report: n cases and, per class, tp / fp / fn, precision and recall (None for 0/0)."""
    counts: dict[str, dict[str, int]] = {}
    pixels: dict[str, dict[str, int]] = {}
    with store.db.connect() as conn:
        cases = _cases(conn, options)
        for case in cases:
            _tally(conn, case["id"], counts)
            if case["kind"] == "segmentation":
                _pixels(store, conn, case, pixels)
    classes = []
    for label in sorted(counts):
        c = counts[label]
        predicted, truth = c["tp"] + c["fp"], c["tp"] + c["fn"]
        classes.append({
            "label": label, **c, "n_predicted": predicted, "n_truth": truth,
            "precision": _ratio(c["tp"], predicted), "recall": _ratio(c["tp"], truth),
        })  # fmt: skip
        if label in pixels:
            px = pixels[label]
            classes[-1]["pixel_precision"] = _ratio(px["tp"], px["tp"] + px["fp"])
            classes[-1]["pixel_recall"] = _ratio(px["tp"], px["tp"] + px["fn"])
    return {
        "model": options.model,
        "version": options.version or None,
        "since": options.since,
        "until": options.until,
        "iou_threshold": IOU,
        "n_cases": len(cases),
        "versions": sorted({c["model_version"] for c in cases}),
        "classes": classes,
    }
