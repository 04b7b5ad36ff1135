"""A verdict as one JSON-ready record of the verdict log."""

from __future__ import annotations

import time
from typing import Any

from protos.vision.v1 import vision_pb2 as pb

STATUS = {
    pb.VERDICT_STATUS_PASS: "PASS",
    pb.VERDICT_STATUS_FAIL: "FAIL",
    pb.VERDICT_STATUS_DROPPED: "DROPPED",
    pb.VERDICT_STATUS_ERROR: "ERROR",
}


def status_name(verdict: pb.Verdict) -> str:
    """PASS, FAIL, DROPPED, ERROR (UNSPECIFIED for a server that did not say)."""
    return STATUS.get(verdict.status, "UNSPECIFIED")


def findings(verdict: pb.Verdict) -> dict[str, Any]:
    """Boxes (label, score, x1 y1 x2 y2), masks (label, score, area) and the image score."""
    summary: dict[str, Any] = {
        "detections": [
            {
                "label": d.label,
                "score": round(d.score, 4),
                "box": [round(v, 1) for v in (d.box.x1, d.box.y1, d.box.x2, d.box.y2)],
            }
            for d in verdict.detections
        ],
        "masks": [
            {"label": m.label, "score": round(m.score, 4), "pixel_area": m.pixel_area}
            for m in verdict.masks
        ],
    }
    if verdict.HasField("image_score"):
        summary["image_score"] = round(verdict.image_score, 4)
    return summary


def verdict_record(verdict: pb.Verdict, capture_ns: int, received_ns: int) -> dict[str, Any]:
    """The log line of one verdict; `latency_ms` runs from capture to the verdict's arrival."""
    record: dict[str, Any] = {
        "sequence": verdict.sequence,
        "camera": verdict.camera_id,
        "status": status_name(verdict),
        "hits": [
            {
                "rule": h.rule,
                "label": h.label,
                "score": round(h.score, 4),
                "pixel_area": h.pixel_area,
            }
            for h in verdict.hits
        ],
        "findings": findings(verdict),
        "latency_ms": round((received_ns - capture_ns) / 1e6, 2),
        "server_latency_ms": round(verdict.server_latency_ms, 2),
        "frame_age_ms": round(verdict.frame_age_ms, 2),
        "model": verdict.model_name,
        "model_version": verdict.model_version,
        "wall_time": time.time(),
    }
    if verdict.HasField("error"):
        record["error"] = {"code": verdict.error.code, "message": verdict.error.message}
    return record
