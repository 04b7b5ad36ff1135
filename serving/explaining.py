"""Explain orchestration: which explain-graph run gives a request its heat maps.

The data plane (`serving/dataplane.py`) decides the path; these functions run in its worker
threads. Rendering heat maps for the wire (overlay PNGs) is the servicers' job
(`serving/encoding.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.repository import ModelVersion
from vision.errors import InvalidInputError
from vision.pipeline import Pipeline
from vision.types import DetectionResult, PreprocessMeta, SegmentationResult
from vision.xai.explainer import Explanation


@dataclass(frozen=True)
class ExplainOptions:
    """Heat maps alongside a prediction (vision.v1 ExplainOptions, without the wire parts)."""

    class_ids: tuple[int, ...] = ()
    max_findings: int = 0  # 0: the model's explain.max_targets, which also caps it


@dataclass
class Explained:
    """A result and the heat maps of its findings."""

    result: DetectionResult | SegmentationResult
    explanations: list[Explanation]


def check_explain(model: ModelVersion, options: ExplainOptions) -> None:
    """InvalidInputError, before any work, when `model` cannot serve `options`."""
    if model.explainer is None:
        raise InvalidInputError(
            f"model {model.name!r} has no explain graph; add one with `vision explain-export`"
        )
    model.explainer.check_classes(options.class_ids)
    model.explainer.limit(options.max_findings)


def one_run_gives_findings(model: ModelVersion, options: ExplainOptions) -> bool:
    """True when the explain graph alone yields the findings and their heat maps.

    That is a segmenter whose explain graph reproduces the plain model's outputs bit for bit
    (checked at load, `Explainer.check_outputs`), with the classes to explain known up front.
    """
    return model.explainer is not None and model.explainer.yields_predictions(options.class_ids)


def explain_found(
    model: ModelVersion,
    result: DetectionResult | SegmentationResult,
    tensor: np.ndarray,
    meta: PreprocessMeta,
    options: ExplainOptions,
) -> list[Explanation]:
    """Heat maps for findings the plain path made (one explain-graph run, outputs discarded).

    A detector's targets are its found boxes, so its graph cannot find them itself; a segmenter
    here explains only the classes found.
    """
    args = (tensor, meta, result, options.class_ids, options.max_findings)
    if isinstance(result, DetectionResult):
        return model.explainer.explain_detections(*args)
    return model.explainer.explain_classes(*args)


def explain_segmentation_in_one_run(
    model: ModelVersion, tensor: np.ndarray, meta: PreprocessMeta, options: ExplainOptions
) -> Explained:
    """Masks and heat maps from one explain-graph run (`one_run_gives_findings`)."""
    classes = list(options.class_ids)[: model.explainer.limit(options.max_findings)]
    result, explanations = model.explainer.explain_segmentation(tensor, meta, classes)
    return Explained(result, explanations)


def explain_detections(
    model: ModelVersion,
    pipeline: Pipeline,
    outputs: dict[str, np.ndarray],
    tensor: np.ndarray,
    meta: PreprocessMeta,
) -> Explained:
    """`Explain` for a detector: postprocess the plain outputs, a heat map per box."""
    result = pipeline.postprocess(outputs, meta)
    return Explained(result, model.explainer.explain_detections(tensor, meta, result))


def detect_and_explain_in_one_pass(
    model: ModelVersion,
    pipeline: Pipeline,
    tensor: np.ndarray,
    meta: PreprocessMeta,
    options: ExplainOptions | None = None,
) -> Explained | None:
    """`Explain` for a detector from the split explain graph alone: its forward part gives the
    outputs (then `pipeline` the boxes), its backward part the heat maps, so the plain run and
    the graph's repeat of it become one forward pass. None when the model's graph cannot
    stand in for the plain run (`Explainer.forward_once`; checked on the first call): the
    caller then runs the plain model and `explain_detections` / `explain_found`. `options`:
    the classes and count to explain (None: every box, up to the model's cap)."""
    explainer = model.explainer
    if not explainer.forward_once(model.session):
        return None
    options = options or ExplainOptions()
    result, explanations = explainer.detect_and_explain(
        tensor, meta, pipeline, options.class_ids, options.max_findings
    )
    return Explained(result, explanations)


def explain_segmentation(
    model: ModelVersion, tensor: np.ndarray, meta: PreprocessMeta, class_ids: list[int]
) -> Explained:
    """`Explain` for a segmenter: the explain graph gives both masks and heat maps."""
    result, explanations = model.explainer.explain_segmentation(tensor, meta, class_ids)
    return Explained(result, explanations)
