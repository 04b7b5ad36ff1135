"""Results become cases: a served `Prediction` as a `CaseDraft`, and the result observer.

`Recorder` is a `DataPlane` result observer (`serving/dataplane.py`): on the event loop it only
decides (capture policy, the model's inspection rules for `failed`) and queues; a writer thread
turns the prediction into a case (pixels, masks and heat maps to disk, rows to SQLite). A full
queue drops the result and counts it (`vision_review_cases_total{source, outcome}` on the
server's /metrics), so a slow disk never slows serving.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from review.settings import CapturePolicy
from review.store import CaseDraft, CaseStore, FindingDraft, ImageInfo
from serving.dataplane import Prediction, ServedResult
from vision.config import ModelConfig
from vision.inspection import InspectionRules, judge
from vision.types import DetectionResult, Image, SegmentationResult
from vision.xai.explainer import Explanation

log = logging.getLogger(__name__)

# The data plane's caller origins and the case sources they are recorded as.
ORIGIN_SOURCES = {"dicom": "dicom", "stream": "line", "review": "upload"}
CAPTURED_APIS = ("detection", "segmentation", "explain")


def source_of(origin: str) -> str:
    """The case source of a data-plane origin (gRPC / REST callers: `api`)."""
    return ORIGIN_SOURCES.get(origin, "api")


def stored_pixels(image: Image) -> tuple[np.ndarray, str]:
    """The decoded image as one stored frame (1 x H x W [x 3]) and its dtype name.

    Decoded DICOM is float32 on 0..255 (windowed already): stored as uint8.
    """
    pixels = image.pixels
    if pixels.dtype not in (np.uint8, np.uint16):
        pixels = np.clip(pixels, 0, 255).round().astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return pixels[np.newaxis], str(pixels.dtype)


def image_info(image: Image, dtype: str) -> ImageInfo:
    """How a decoded image is shown (DICOM header: the study UID)."""
    header = image.dicom
    channels = 3 if image.pixels.ndim == 3 and image.pixels.shape[2] == 3 else 1
    return ImageInfo(
        width=image.width,
        height=image.height,
        channels=channels,
        dtype=dtype,
        dicom=image.source_format == "dicom",
        study_uid=header.reference.study_instance_uid if header else None,
    )


def patient_of(image: Image) -> dict[str, str] | None:
    """The patient / study attributes the source carried (DICOM only), else None."""
    if image.dicom is None:
        return None
    patient = dataclasses.asdict(image.dicom.patient)
    present = {k: v for k, v in patient.items() if v is not None}
    return present or None


def _heat_for(explanations: list[Explanation], match: Callable[[Explanation], bool]):
    return next((e.heat for e in explanations if match(e)), None)


def _detection_findings(result: DetectionResult, explanations: list[Explanation]):
    findings = []
    for det in result.detections:
        heat = _heat_for(explanations, lambda e, d=det: e.detection == d)
        box = (det.x1, det.y1, det.x2, det.y2)
        findings.append(FindingDraft(det.label, float(det.score), box, heat))
    return findings


def _segmentation_parts(result: SegmentationResult, explanations: list[Explanation]):
    """One finding per non-empty class mask (its bounding box), the masks and their scores."""
    findings, masks, scores = [], {}, {}
    for mask in result.masks:
        if mask.pixel_area == 0 or mask.class_id == 0:
            continue
        rows, cols = np.nonzero(mask.mask)
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        heat = _heat_for(explanations, lambda e, m=mask: e.class_id == m.class_id)
        findings.append(FindingDraft(mask.label, float(mask.score), box, heat))
        masks[mask.label] = mask.mask
        scores[mask.label] = float(mask.score)
    return findings, masks, scores


def draft_from(prediction: Prediction, config: ModelConfig, source: str) -> CaseDraft:
    """The case of a served prediction (pixels as decoded; patient only if the source had it)."""
    frames, dtype = stored_pixels(prediction.image)
    draft = CaseDraft(
        model=prediction.model,
        model_version=prediction.version,
        source=source,
        kind=config.task,
        labels=list(config.labels),
        frames=frames,
        info=image_info(prediction.image, dtype),
        patient=patient_of(prediction.image),
    )
    result = prediction.result
    if isinstance(result, DetectionResult):
        draft.findings = _detection_findings(result, prediction.explanations)
    else:
        draft.findings, draft.masks, draft.mask_scores = _segmentation_parts(
            result, prediction.explanations
        )
        draft.image_score = result.image_score
    return draft


def draft_from_frames(predictions: list[Prediction], config: ModelConfig, source: str) -> CaseDraft:
    """One case for the frames of a multi-frame image or series, in order: the first frame's
    draft with every frame's findings (each with its frame index), masks and pixels."""
    draft = draft_from(predictions[0], config, source)
    for index, prediction in enumerate(predictions[1:], start=1):
        frame = draft_from(prediction, config, source)
        for finding in frame.findings:
            finding.frame = index
        draft.findings += frame.findings
        for label, mask in frame.masks.items():
            draft.frame_masks[(index, label)] = mask
        for label, score in frame.mask_scores.items():
            draft.mask_scores[label] = max(draft.mask_scores.get(label, score), score)
    draft.frames = np.concatenate([stored_pixels(p.image)[0] for p in predictions])
    draft.info.frames = len(predictions)
    return draft


def failed(result: DetectionResult | SegmentationResult, config: ModelConfig) -> bool:
    """Whether the model's inspection rules fail the image (no rules: any finding)."""
    return bool(judge(result, InspectionRules.from_config(config)))


class Recorder:
    """A result observer: captured results are queued, then written by a thread of its own."""

    def __init__(
        self,
        store: CaseStore,
        policy: CapturePolicy,
        config_of: Callable[[str, str], ModelConfig],
        queue_size: int = 256,
        seed: int | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store, self.policy, self._config_of = store, policy, config_of
        self._cases = Counter(
            "vision_review_cases",
            "Served results offered to the review tool, by source and outcome "
            "(recorded, dropped: queue full, failed: not written)",
            ["source", "outcome"],
            registry=registry,
        )
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._rng = random.Random(seed)
        self.dropped = 0
        self.recorded = 0
        self.node_series = False  # True once the DICOM node hands series (observe_series)
        self._thread = threading.Thread(target=self._run, name="review-recorder", daemon=True)
        self._thread.start()

    def __call__(self, served: ServedResult) -> None:
        """Observe one served result (on the event loop: decide and queue only)."""
        prediction = served.prediction
        if served.api not in CAPTURED_APIS or not isinstance(prediction, Prediction):
            return
        source = source_of(served.origin)
        if source == "upload":  # the tool records its uploads itself
            return
        if source == "dicom" and self.node_series:  # recorded per series (observe_series)
            return
        config = self._config_of(prediction.model, prediction.version)
        if self._wanted(prediction.model, source, [prediction.result], config):
            self._put((draft_from, (prediction, config, source)), source)

    def observe_series(self, sources: list, predictions: list[Prediction]) -> None:
        """Observe a series the DICOM node inferred (on the event loop: decide and queue).

        `sources[i]` is the pydicom dataset whose frame `predictions[i]` holds.
        """
        from review.series import series_draft

        if not predictions:
            return
        first = predictions[0]
        config = self._config_of(first.model, first.version)
        if self._wanted(first.model, "dicom", [p.result for p in predictions], config):
            self._put((series_draft, (sources, predictions, config)), "dicom")

    def series_observer(self) -> Callable[[list, list[Prediction]], None]:
        """`observe_series`, for `DicomNode.add_series_observer`: node frames stop being
        recorded one by one."""
        self.node_series = True
        return self.observe_series

    def _wanted(self, model: str, source: str, results: list, config: ModelConfig) -> bool:
        mode = self.policy.mode(model, source)
        if mode.kind == "off":
            return False
        failing = mode.kind == "failed" and any(failed(r, config) for r in results)
        return mode.wants(failing, self._rng)

    def _put(self, job: tuple, source: str) -> None:
        try:
            self._queue.put_nowait((job, source))
        except queue.Full:
            self.dropped += 1
            self._cases.labels(source, "dropped").inc()
            log.warning("review capture queue full: a %s result was not recorded", source)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            (build, args), source = item
            try:
                self.store.create(build(*args))
                self.recorded += 1
                self._cases.labels(source, "recorded").inc()
            except Exception:  # noqa: BLE001 - a failed capture never stops the recorder
                log.exception("review capture of a %s result failed", source)
                self._cases.labels(source, "failed").inc()
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued result is written (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(30)
