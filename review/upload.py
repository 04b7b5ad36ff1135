"""An upload in the tool: run the model through the data plane and record the case.

DICOM uploads keep their stored values for the viewer's window/level: the modality LUT
(rescale) applied, as uint16 or int16 when the values are whole numbers in range (else the
decoded 8-bit image), every frame, with the file's windows and the modality's usual presets;
the file itself is kept for DICOM SEG export. The model runs on every frame (concurrently, so
they batch); findings and masks carry their frame index. MONOCHROME1
values are kept as stored and the case says `invert` (the page and the PNG renderings invert).
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from review.capture import draft_from, draft_from_frames
from review.store import CaseDraft, CaseStore
from serving.dataplane import DataPlane, ImageSource, PredictOptions
from serving.explaining import ExplainOptions
from vision.errors import InvalidInputError
from vision.io import decode_frames, sniff_format
from vision.types import Image

CT_PRESETS = (("soft tissue", 40.0, 400.0), ("lung", -600.0, 1500.0), ("bone", 400.0, 1800.0),
              ("brain", 40.0, 80.0))  # fmt: skip


def _values(ds: pydicom.Dataset, name: str) -> list[float]:
    value = ds.get(name)
    if value is None:
        return []
    items = value if isinstance(value, pydicom.multival.MultiValue) else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return []


def presets(ds: pydicom.Dataset) -> list[dict[str, Any]]:
    """The file's windows (with their explanations) and, for CT, the usual presets."""
    centers, widths = _values(ds, "WindowCenter"), _values(ds, "WindowWidth")
    names = ds.get("WindowCenterWidthExplanation") or []
    names = [names] if isinstance(names, str) else list(names)
    found = []
    for i, (center, width) in enumerate(zip(centers, widths, strict=False)):
        name = str(names[i]) if i < len(names) else f"window {i + 1}"
        found.append({"name": name, "center": center, "width": width})
    if ds.get("Modality") == "CT":
        found += [{"name": n, "center": c, "width": w} for n, c, w in CT_PRESETS]
    return found


def stored_values(ds: pydicom.Dataset) -> np.ndarray | None:
    """Grey frames F x H x W as uint16 / int16 after rescale, or None when they do not fit."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    raw = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    values = apply_modality_lut(raw, ds)
    values = values.reshape(frames, *values.shape[-2:])
    if not np.all(np.equal(np.mod(values, 1), 0)):
        return None
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 65535:
        return values.astype(np.uint16)
    if lo >= -32768 and hi <= 32767:
        return values.astype(np.int16)
    return None


def with_dicom_values(draft: CaseDraft, data: bytes) -> CaseDraft:
    """The draft with the file's stored values, windows and bytes (when they fit)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = stored_values(ds)
    draft.source_dicom = data
    if frames is None:
        return draft
    draft.frames = frames
    draft.info.invert = ds.get("PhotometricInterpretation") == "MONOCHROME1"
    draft.info.dtype = str(frames.dtype)
    draft.info.frames = int(frames.shape[0])
    found = presets(ds)
    draft.info.presets = found
    if found:
        draft.info.window = (found[0]["center"], found[0]["width"])
    else:
        lo, hi = float(frames.min()), float(frames.max())
        draft.info.window = ((lo + hi) / 2, max(hi - lo, 1.0))
    return draft


def dicom_frames(data: bytes, max_pixels: int, window: bool) -> list[Image | ImageSource]:
    """A multi-frame DICOM's frames, decoded (the model sees each); else the bytes as one."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if int(ds.get("NumberOfFrames", 1) or 1) <= 1:
        return [ImageSource(encoded=data)]
    return list(decode_frames(ds, max_pixels, window))


async def upload(plane: DataPlane, store: CaseStore, data: bytes, model: str) -> int:
    """Run `model` on the uploaded image (with heat maps when it explains) and record the case."""
    if not data:
        raise InvalidInputError("the upload has no image: send the file as form field 'image'")
    info = plane.model_info(model)
    explain = ExplainOptions() if info.explainable else None
    task = info.config.task
    if task not in ("detection", "segmentation"):
        raise InvalidInputError(f"model {model!r} is {task}: the review tool takes 2D models")
    images: list[Image | ImageSource] = [ImageSource(encoded=data)]
    if sniff_format(data) == "dicom":
        window = info.config.preprocess.dicom_window
        images = await plane.run_in_worker(dicom_frames, data, plane.max_image_pixels, window)
    options = PredictOptions(explain=explain)
    predictions = await asyncio.gather(
        *(plane.predict(task, model, "", image, options, origin="review") for image in images)
    )
    config = plane.model_info(model, predictions[0].version).config
    if len(predictions) == 1:
        draft = draft_from(predictions[0], config, "upload")
    else:
        draft = draft_from_frames(list(predictions), config, "upload")
    if sniff_format(data) == "dicom":
        draft = await plane.run_in_worker(with_dicom_values, draft, data)
    return await plane.run_in_worker(store.create, draft)
