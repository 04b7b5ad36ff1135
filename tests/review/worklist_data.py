"""Bulk cases for worklist tests and the benchmark: rows straight into the review database."""

from __future__ import annotations

import json
import random
import time

from review.db import Database

STATUSES = ("new", "in_review", "accepted", "corrected", "rejected")
MODELS = ("boxes", "bright", "chest", "pcb-defects")
SOURCES = ("dicom", "line", "upload", "api")


def insert_cases(db: Database, count: int, seed: int = 0) -> None:
    """`count` cases with findings spread over statuses, models, sources, scores and ages."""
    rng = random.Random(seed)
    now = time.time()
    image = json.dumps(
        {"width": 64, "height": 64, "frames": 1, "dicom": False, "dtype": "uint8",
         "channels": 1, "window": None, "presets": [], "study_uid": None}
    )  # fmt: skip
    rows = []
    for _ in range(count):
        findings = rng.randint(0, 5)
        rows.append((
            rng.choice(STATUSES), rng.choice(MODELS), "1", rng.choice(SOURCES), "detection",
            findings, round(rng.random(), 4), None, now - rng.uniform(0, 30 * 86400), now,
            json.dumps(["defect", "dust"]), image,
        ))  # fmt: skip
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO cases (status, model, model_version, source, kind, finding_count, "
            "max_score, image_score, created_at, updated_at, labels, image) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        newest = conn.execute("SELECT id FROM cases ORDER BY id DESC LIMIT ?", (count,))
        ids = [r[0] for r in newest]
        conn.executemany(
            "INSERT INTO findings (case_id, label, score, x0, y0, x1, y1, origin, status) "
            "VALUES (?, ?, 0.5, 1, 1, 9, 9, 'ai', 'pending')",
            [(case_id, rng.choice(("defect", "dust"))) for case_id in ids[: count // 2]],
        )
