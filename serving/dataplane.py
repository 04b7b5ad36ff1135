"""The data plane: what the server does, with no wire format. Servicers translate to and from it.

Decode, preprocess and postprocess run in a thread pool (numpy, OpenCV and ONNX Runtime release
the GIL); inference goes through the model version's dynamic batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from serving.batcher import BatcherClosedError
from serving.metrics import Metrics
from serving.repository import ModelRepository, ModelVersion
from serving.statistics import StatisticsBook
from vision.errors import DeadlineExceededError, InvalidInputError
from vision.io import decode_image, image_from_raw
from vision.masks import encode_png, encode_rle
from vision.pipeline import Pipeline
from vision.render import draw_overlay, encode_png_rgb, heatmap_overlay
from vision.types import DetectionResult, Image, SegmentationResult
from vision.xai.explainer import Explanation


@dataclass(frozen=True)
class ImageSource:
    """An image as a client sent it: encoded bytes, or raw pixels with shape and dtype."""

    encoded: bytes | None = None
    raw: bytes | None = None
    shape: tuple[int, ...] = ()
    dtype: str = ""


@dataclass(frozen=True)
class ExplainOptions:
    """Heat maps alongside a prediction (vision.v1 ExplainOptions)."""

    class_ids: tuple[int, ...] = ()
    overlay: bool = False
    max_findings: int = 0  # 0: the model's explain.max_targets, which also caps it


@dataclass(frozen=True)
class PredictOptions:
    score_threshold: float | None = None
    iou_threshold: float | None = None
    overlay: bool = False
    mask_encoding: str = "png"  # png | rle
    explain: ExplainOptions | None = None  # None: no heat maps


@dataclass
class Prediction:
    """A result in original-image coordinates, with the timings of each stage (ms)."""

    model: str
    version: str
    image: Image
    result: DetectionResult | SegmentationResult
    timings: dict[str, float] = field(default_factory=dict)
    overlay_png: bytes = b""
    encoded_masks: list[bytes | list[int]] = field(default_factory=list)  # aligned with masks
    explanations: list[Explanation] = field(default_factory=list)
    heat_overlays: list[bytes] = field(default_factory=list)  # aligned with explanations
    explain_method: str = ""


class DataPlane:
    """Serves predictions from a ModelRepository."""

    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        stats: StatisticsBook,
        executor: ThreadPoolExecutor,
        max_image_pixels: int,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.stats = stats
        self._executor = executor
        self._max_pixels = max_image_pixels

    async def predict(
        self,
        task: str,
        name: str,
        version: str,
        source: ImageSource,
        options: PredictOptions,
        deadline: float | None = None,
    ) -> Prediction:
        """Decode, preprocess, batch, infer and postprocess one image with a `task` model.

        With `options.explain`, also a heat map per finding (metrics api "explain").
        """
        model = self._resolve(task, name, version)
        if options.explain is not None:
            _check_explain(model, options.explain)
        with self._track(task if options.explain is None else "explain", model):
            try:
                return await self._predict(model, source, options, deadline)
            except BatcherClosedError:
                # The version was swapped out by a reload while this request was decoding.
                fresh = self._resolve(task, name, version)
                if fresh is model:
                    raise
                if options.explain is not None:
                    _check_explain(fresh, options.explain)
                return await self._predict(fresh, source, options, deadline)

    def _resolve(self, task: str, name: str, version: str) -> ModelVersion:
        model = self.repository.get(name, version)
        if model.config.task != task:
            raise InvalidInputError(
                f"model {name!r} is a {model.config.task} model; call "
                f"{'Detect' if model.config.task == 'detection' else 'Segment'} instead"
            )
        return model

    async def _predict(
        self, model: ModelVersion, source: ImageSource, options: PredictOptions, deadline
    ) -> Prediction:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        image, tensor, meta, timings = await loop.run_in_executor(
            self._executor, self._prepare, model, source
        )
        explain = options.explain
        if explain is not None and model.explainer.yields_predictions(explain.class_ids):
            # A segmenter whose explain graph reproduces the plain model's outputs bit for bit
            # (checked at load, `Explainer.check_outputs`), with the classes to explain known
            # up front: its one run gives the same masks as Segment without explain, and the
            # heat maps, for about the price of the heat maps alone.
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError("the deadline passed before inference")
            t = time.perf_counter()
            prediction = await loop.run_in_executor(
                self._executor, _explained_segmentation, model, tensor, meta, image, options
            )
            timings["explain_ms"] = _ms(t)  # inference and postprocessing included
        else:
            batch = await model.batcher.submit(
                {model.config.input.name: tensor[np.newaxis]}, deadline
            )
            timings["queue_ms"] = batch.queue_s * 1000.0
            timings["inference_ms"] = batch.compute_s * 1000.0
            t = time.perf_counter()
            pipeline = _pipeline_for(model, options)
            outputs = {k: v[0] for k, v in batch.outputs.items()}
            prediction = await loop.run_in_executor(
                self._executor, _finish, pipeline, outputs, meta, image, options
            )
            timings["postprocess_ms"] = _ms(t)
        if explain is not None and not prediction.explain_method:
            # The findings are the plain path's (batcher + postprocess, exactly as without
            # explain); the explain graph, whose own outputs are discarded, adds the CAMs for
            # them in one run. A detector's targets are its found boxes, so its graph cannot
            # find them itself; its outputs could also differ from the plain model's (another
            # graph, maybe another precision). A segmenter here explains only the classes found.
            t = time.perf_counter()
            await loop.run_in_executor(
                self._executor, _add_explanations, model, prediction, tensor, meta, explain
            )
            timings["explain_ms"] = _ms(t)
        if explain is not None:
            prediction.explain_method = model.config.explain.method
        timings["total_ms"] = _ms(start)
        return _stamped(prediction, model, timings)

    async def explain(
        self,
        name: str,
        version: str,
        source: ImageSource,
        class_ids: list[int],
        options: PredictOptions,
        deadline: float | None = None,
    ) -> Prediction:
        """Predict and explain: a Grad-CAM heat map per finding, from the explain graph."""
        model = self.repository.get(name, version)
        _check_explain(model, ExplainOptions(overlay=options.overlay))
        with self._track("explain", model):
            return await self._explain(model, source, class_ids, options, deadline)

    async def _explain(
        self, model: ModelVersion, source, class_ids: list[int], options, deadline
    ) -> Prediction:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        image, tensor, meta, timings = await loop.run_in_executor(
            self._executor, self._prepare, model, source
        )
        if model.config.task == "detection":
            batch = await model.batcher.submit(
                {model.config.input.name: tensor[np.newaxis]}, deadline
            )
            timings["queue_ms"] = batch.queue_s * 1000.0
            timings["inference_ms"] = batch.compute_s * 1000.0
            outputs = {k: v[0] for k, v in batch.outputs.items()}
            t = time.perf_counter()
            prediction = await loop.run_in_executor(
                self._executor,
                _explain_detections,
                model,
                _pipeline_for(model, options),
                outputs,
                tensor,
                meta,
                image,
                options,
            )
        else:
            t = time.perf_counter()
            prediction = await loop.run_in_executor(
                self._executor,
                _explain_segmentation,
                model,
                tensor,
                meta,
                image,
                class_ids,
                options,
            )
        timings["explain_ms"] = _ms(t)  # graph run, postprocess, heat maps and overlays
        timings["total_ms"] = _ms(start)
        prediction.explain_method = model.config.explain.method
        return _stamped(prediction, model, timings)

    def _prepare(self, model: ModelVersion, source: ImageSource):
        """Decode and preprocess in one worker job; returns image, tensor, meta and timings."""
        start = time.perf_counter()
        image = self._decode(source, model.config.preprocess.dicom_window)
        timings = {"decode_ms": _ms(start)}
        t = time.perf_counter()
        tensor, meta = model.pipeline.preprocess(image)
        timings["preprocess_ms"] = _ms(t)
        return image, tensor, meta, timings

    def _decode(self, source: ImageSource, dicom_window: bool) -> Image:
        if source.encoded is not None:
            return decode_image(source.encoded, self._max_pixels, dicom_window=dicom_window)
        if source.raw is not None:
            return image_from_raw(source.raw, source.shape, source.dtype, self._max_pixels)
        raise InvalidInputError("the request has no image: set image.encoded or image.raw")

    async def infer(
        self, name: str, version: str, feeds: dict[str, np.ndarray], deadline: float | None
    ) -> tuple[ModelVersion, dict[str, np.ndarray]]:
        """Run raw tensors (KServe v2) through the model's batcher."""
        model = self.repository.get(name, version)
        if not feeds:
            raise InvalidInputError("the request has no inputs")
        rows = {v.shape[0] if v.ndim else 0 for v in feeds.values()}
        if len(rows) != 1 or 0 in rows:
            raise InvalidInputError("every input needs the same leading batch dimension (>= 1)")
        with self._track("infer", model):
            model.session.check_feeds(feeds)
            try:
                batch = await model.batcher.submit(feeds, deadline)
            except BatcherClosedError:
                model = self.repository.get(name, version)
                batch = await model.batcher.submit(feeds, deadline)
        return model, batch.outputs

    @contextlib.contextmanager
    def _track(self, api: str, model: ModelVersion) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            elapsed = time.perf_counter() - start
            self.metrics.observe_request(
                api, model.name, model.version, type(exc).__name__, elapsed
            )
            self.stats.record_request(model.name, model.version, False, elapsed)
            raise
        elapsed = time.perf_counter() - start
        self.metrics.observe_request(api, model.name, model.version, "ok", elapsed)
        self.stats.record_request(model.name, model.version, True, elapsed)


def _stamped(prediction: Prediction, model: ModelVersion, timings: dict) -> Prediction:
    prediction.model, prediction.version, prediction.timings = model.name, model.version, timings
    return prediction


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _pipeline_for(model: ModelVersion, options: PredictOptions) -> Pipeline:
    """The version's pipeline, or a per-request copy when the request overrides thresholds."""
    overrides = {}
    if options.score_threshold is not None:
        overrides["score_threshold"] = options.score_threshold
    if options.iou_threshold is not None:
        overrides["iou_threshold"] = options.iou_threshold
    if not overrides:
        return model.pipeline
    for key, value in overrides.items():
        if not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"{key} must lie in [0, 1], got {value}")
    post = dataclasses.replace(model.config.postprocess, **overrides)
    return Pipeline(dataclasses.replace(model.config, postprocess=post))


def _check_explain(model: ModelVersion, options: ExplainOptions) -> None:
    """InvalidInputError, before any work, when `model` cannot serve `options`."""
    if model.explainer is None:
        raise InvalidInputError(
            f"model {model.name!r} has no explain graph; add one with `vision explain-export`"
        )
    model.explainer.check_classes(options.class_ids)
    model.explainer.limit(options.max_findings)


def _add_explanations(model, prediction: Prediction, tensor, meta, options: ExplainOptions):
    """Heat maps for `prediction`'s findings (one explain-graph run), and their overlays."""
    explainer = model.explainer
    args = (tensor, meta, prediction.result, options.class_ids, options.max_findings)
    if isinstance(prediction.result, DetectionResult):
        prediction.explanations = explainer.explain_detections(*args)
    else:
        prediction.explanations = explainer.explain_classes(*args)
    _with_heat_overlays(prediction, options)


def _explain_detections(model, pipeline, outputs, tensor, meta, image, options) -> Prediction:
    result = pipeline.postprocess(outputs, meta)
    prediction = Prediction("", "", image, result)
    prediction.explanations = model.explainer.explain_detections(tensor, meta, result)
    return _with_heat_overlays(prediction, options)


def _explain_segmentation(model, tensor, meta, image, class_ids, options) -> Prediction:
    result, explanations = model.explainer.explain_segmentation(tensor, meta, class_ids)
    prediction = Prediction("", "", image, result, explanations=explanations)
    prediction.encoded_masks = [encode_png(m.mask) for m in result.masks]
    return _with_heat_overlays(prediction, options)


def _with_heat_overlays(
    prediction: Prediction, options: PredictOptions | ExplainOptions
) -> Prediction:
    if options.overlay:
        prediction.heat_overlays = [
            encode_png_rgb(heatmap_overlay(prediction.image, e.heat))
            for e in prediction.explanations
        ]
    return prediction


def _explained_segmentation(model, tensor, meta, image, options: PredictOptions) -> Prediction:
    """Masks and heat maps from one explain-graph run (`Explainer.yields_predictions`)."""
    explain = options.explain
    classes = list(explain.class_ids)[: model.explainer.limit(explain.max_findings)]
    result, explanations = model.explainer.explain_segmentation(tensor, meta, classes)
    prediction = Prediction("", "", image, result, explanations=explanations)
    prediction.explain_method = model.config.explain.method
    return _with_heat_overlays(_rendered(prediction, options), explain)


def _finish(pipeline: Pipeline, outputs, meta, image: Image, options: PredictOptions):
    """Postprocess, encode masks and draw the overlay, in one worker job."""
    return _rendered(Prediction("", "", image, pipeline.postprocess(outputs, meta)), options)


def _rendered(prediction: Prediction, options: PredictOptions) -> Prediction:
    """Masks encoded as asked, and the overlay when asked."""
    image, result = prediction.image, prediction.result
    if isinstance(result, SegmentationResult):
        encode = encode_rle if options.mask_encoding == "rle" else encode_png
        prediction.encoded_masks = [encode(m.mask) for m in result.masks]
    if options.overlay:
        prediction.overlay_png = encode_png_rgb(draw_overlay(image, result))
    return prediction
