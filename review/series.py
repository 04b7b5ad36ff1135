"""A series from the DICOM node as one case: its instances' frames in order, findings per frame.

The node hands the observer (`Recorder.observe_series`) the dataset of each inferred frame and
its prediction. The case keeps the stored values after rescale (uint16 / int16, as uploads do;
else the decoded 8-bit images), the first instance's windows and presets, `invert` for
MONOCHROME1, and every source instance as `source-<i>.dcm` for DICOM SEG export. Frames are
ordered by InstanceNumber, then the frame number inside an instance. Segmentation masks are
kept for every frame (as for multi-frame uploads); findings carry their frame index.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom

from review.capture import draft_from_frames
from review.store import CaseDraft
from review.upload import presets, stored_values
from serving.dataplane import Prediction
from vision.config import ModelConfig


def _instance_number(ds: pydicom.Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def ordered(
    sources: list[pydicom.Dataset], predictions: list[Prediction]
) -> tuple[list[pydicom.Dataset], list[Prediction]]:
    """The distinct instances by InstanceNumber and the predictions in that frame order."""
    instances: list[pydicom.Dataset] = []
    for ds in sources:
        if not any(ds is seen for seen in instances):
            instances.append(ds)
    instances.sort(key=_instance_number)  # stable: arrival order breaks ties
    rank = {id(ds): i for i, ds in enumerate(instances)}
    pairs = sorted(
        zip(sources, predictions, strict=True),
        key=lambda p: (rank[id(p[0])], p[1].image.dicom.frames[0] if p[1].image.dicom else 0),
    )
    return instances, [p for _, p in pairs]


def _stored_series(instances: list[pydicom.Dataset]) -> np.ndarray | None:
    """Every instance's stored values stacked (F x H x W), or None when any does not fit."""
    parts = [stored_values(ds) for ds in instances]
    if any(p is None for p in parts) or len({p.shape[1:] for p in parts}) != 1:
        return None
    signed = any(p.dtype == np.int16 for p in parts)
    joined = np.concatenate(parts)
    if signed and joined.max() > 32767:
        return None
    return joined.astype(np.int16 if signed else np.uint16)


def _part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series_draft(
    sources: list[pydicom.Dataset], predictions: list[Prediction], config: ModelConfig
) -> CaseDraft:
    """One case for a node series (see the module doc); `sources[i]` holds `predictions[i]`."""
    instances, predictions = ordered(sources, predictions)
    draft = draft_from_frames(predictions, config, "dicom")
    draft.source_series = [_part10(ds) for ds in instances]
    values = _stored_series(instances)
    if values is None or values.shape[0] != len(predictions):
        return draft
    first = instances[0]
    draft.frames = values
    draft.info.dtype = str(values.dtype)
    draft.info.invert = first.get("PhotometricInterpretation") == "MONOCHROME1"
    draft.info.presets = presets(first)
    if draft.info.presets:
        draft.info.window = (draft.info.presets[0]["center"], draft.info.presets[0]["width"])
    else:
        lo, hi = float(values.min()), float(values.max())
        draft.info.window = ((lo + hi) / 2, max(hi - lo, 1.0))
    return draft
