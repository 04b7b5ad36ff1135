"""The data plane: what the server does, with no wire format. Transports translate to and from it.

Predictions take an `Image` already decoded (the DICOM node hands frames it decoded itself) or an
`ImageSource` to decode with the model's settings; they return domain results, which transports
encode (`serving/encoding.py`). Every prediction and inference is admitted first
(`serving/admission.py`: a bounded number per model, refused before any decode when over the
bound or when its deadline cannot be met). Decode and preprocess run in the worker pool (numpy,
OpenCV and ONNX Runtime release the GIL); postprocess and wire encoding run in a pool of their
own, so admitted requests never wait behind new decodes; inference goes through the model
version's dynamic batcher. Explain orchestration lives in `serving/explaining.py`. Model
listing, metadata, load, unload and statistics go through here too, so transports never read
the repository.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from serving import explaining, volumes
from serving.accounting import AdmittedCollector, track
from serving.admission import Admission, Ticket
from serving.batcher import BatcherClosedError, ExecutionFailedError
from serving.explaining import ExplainOptions
from serving.metrics import Metrics
from serving.model_admin import ModelAdmin
from serving.predictions import (
    ImageInput,
    ImageSource,
    InferResult,
    Prediction,
    PredictOptions,
    ResultObserver,
    ServedResult,
    decode,
)
from serving.repository import ModelRepository, ModelVersion
from serving.statistics import StatisticsBook
from serving.tensors import check_batch_rows
from serving.volumes import (
    DEFAULT_MAX_VOLUME_VOXELS,
    VOLUMETRIC,
    VolumeInput,
    VolumePrediction,
    VolumeSource,
)
from serving.volumes import _in_flight as windows_in_flight
from vision.errors import DeadlineExceededError, InvalidInputError
from vision.pipeline import Pipeline

log = logging.getLogger(__name__)
T = TypeVar("T")
# Reads and decodes a raw inference body once admitted: its feeds and deadline.
RawReader = Callable[[], Awaitable[tuple[dict[str, np.ndarray], float | None]]]

__all__ = [
    "DataPlane",
    "ExplainOptions",
    "ImageSource",
    "InferResult",
    "Prediction",
    "PredictOptions",
    "ServedResult",
    "VolumePrediction",
    "VolumeSource",
    "decode",
]


class DataPlane(ModelAdmin):
    """Serves predictions, raw inference and model management from a ModelRepository."""

    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        stats: StatisticsBook,
        executor: ThreadPoolExecutor,
        max_image_pixels: int,
        on_result: ResultObserver | None = None,
        max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS,
        admission: Admission | None = None,
        post_threads: int = 2,
    ) -> None:
        self._repository = repository
        self.admission = admission or Admission()
        self._post = ThreadPoolExecutor(max(1, post_threads), thread_name_prefix="vision-post")
        self.metrics = metrics
        self.stats = stats
        self._executor = executor
        self._max_pixels = max_image_pixels
        self._max_voxels = max_volume_voxels
        self._observers: list[ResultObserver] = [on_result] if on_result else []
        metrics.registry.register(AdmittedCollector(self.admission))
        self._shutting_down = False

    @property
    def max_image_pixels(self) -> int:
        """The pixel limit decoded images are held to (0: none)."""
        return self._max_pixels

    @property
    def max_volume_voxels(self) -> int:
        """The voxel limit volumes are held to, before and after resampling (0: none)."""
        return self._max_voxels

    # --- results --------------------------------------------------------------------------

    def add_result_observer(self, observer: ResultObserver) -> None:
        """Call `observer` on the event loop after every successful predict / explain.

        Observers must return quickly (hand heavy work to a queue of their own); one that
        raises is logged and does not fail the request.
        """
        self._observers.append(observer)

    def _notify(self, api: str, origin: str, prediction: Prediction | VolumePrediction) -> None:
        served = ServedResult(api, origin, prediction)
        for observer in self._observers:
            try:
                observer(served)
            except Exception:  # noqa: BLE001 - an observer never fails a served request
                log.exception("result observer %r failed", observer)

    async def run_in_worker(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking `function(*args)` in the data plane's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def run_post(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking `function(*args)` for an admitted request past inference (postprocess,
        wire encoding): a pool of its own, so it never waits behind new decodes."""
        return await asyncio.get_running_loop().run_in_executor(self._post, function, *args)

    # --- predictions ----------------------------------------------------------------------

    async def predict(
        self,
        task: str,
        name: str,
        version: str,
        image: ImageInput,
        options: PredictOptions,
        deadline: float | None = None,
        origin: str = "",
        shed: bool = False,
    ) -> Prediction:
        """Preprocess, batch, infer and postprocess one image with a `task` model.

        `image` is decoded already, or an `ImageSource` decoded here with the model's settings.
        With `options.explain`, also a heat map per finding (metrics api "explain"). Admission
        comes first: `shed` refuses at once when the model is at capacity (clients that can
        retry elsewhere); otherwise the call waits for a ticket until its deadline.
        """
        model = self._resolve(task, name, version)
        if options.explain is not None:
            explaining.check_explain(model, options.explain)
        api = task if options.explain is None else "explain"
        with self._tracked(api, model, deadline):
            async with self.admission.ticket(model, deadline, shed) as ticket:
                try:
                    prediction = await self._predict(model, image, options, deadline, ticket)
                except BatcherClosedError:
                    # The version was swapped out by a reload while this request was decoding.
                    fresh = self._resolve(task, name, version)
                    if fresh is model:
                        raise
                    if options.explain is not None:
                        explaining.check_explain(fresh, options.explain)
                    prediction = await self._predict(fresh, image, options, deadline, ticket)
        self._notify(api, origin, prediction)
        return prediction

    def _get(self, name: str, version: str) -> ModelVersion:
        """The version to serve with; UNAVAILABLE when its runtime was marked failed."""
        model = self._repository.get(name, version)
        if model.batcher.failed_reason:
            raise ExecutionFailedError(
                f"model {name!r} is marked failed: {model.batcher.failed_reason}"
            )
        return model

    def _resolve(self, task: str, name: str, version: str) -> ModelVersion:
        model = self._get(name, version)
        if model.config.task != task:
            raise InvalidInputError(
                f"model {name!r} is a {model.config.task} model; call "
                f"{_RPC_OF_TASK.get(model.config.task, 'Segment')} instead"
            )
        return model

    async def segment_volume(
        self,
        name: str,
        version: str,
        volume: VolumeInput,
        deadline: float | None = None,
        origin: str = "",
        shed: bool = False,
    ) -> VolumePrediction:
        """Per-label 3D masks of a volume (a `Volume`, or a `VolumeSource` assembled here) from
        a volumetric model, by sliding windows through its batcher (`serving/volumes.py`).

        Admitted first, before the series is assembled: one ticket per volume, holding the
        places of the windows it keeps in flight (`shed`: refuse at once when they are not free).
        """
        model = self._resolve(VOLUMETRIC, name, version)
        places = windows_in_flight(model)
        with self._tracked("segment_volume", model, deadline):
            async with self.admission.ticket(model, deadline, shed, places, places):
                try:
                    prediction = await volumes.segment_volume(
                        model, volume, deadline, self.run_in_worker, self._max_voxels
                    )
                except BatcherClosedError:
                    fresh = self._resolve(VOLUMETRIC, name, version)
                    if fresh is model:
                        raise
                    prediction = await volumes.segment_volume(
                        fresh, volume, deadline, self.run_in_worker, self._max_voxels
                    )
        self._notify("segment_volume", origin, prediction)
        return prediction

    async def _predict(
        self,
        model: ModelVersion,
        image: ImageInput,
        options: PredictOptions,
        deadline: float | None,
        ticket: Ticket,
    ) -> Prediction:
        start = time.perf_counter()
        image, tensor, meta, timings = await self.run_in_worker(self._prepare, model, image)
        ticket.prepared((timings["decode_ms"] + timings["preprocess_ms"]) / 1000.0)
        explain = options.explain
        done = None
        if explain is not None and model.config.task == "detection":
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError("the deadline passed before inference")
            t = time.perf_counter()
            pipeline = _pipeline_for(model, options)
            done = await self.run_in_worker(
                explaining.detect_and_explain_in_one_pass, model, pipeline, tensor, meta, explain
            )
        elif explain is not None and explaining.one_run_gives_findings(model, explain):
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError("the deadline passed before inference")
            t = time.perf_counter()
            done = await self.run_in_worker(
                explaining.explain_segmentation_in_one_run, model, tensor, meta, explain
            )
        if done is not None:
            timings["explain_ms"] = _ms(t)  # inference and postprocessing included
            prediction = Prediction("", "", image, done.result, explanations=done.explanations)
        else:
            outputs = await self._batched(model, tensor, deadline, timings)
            ticket.computed()
            t = time.perf_counter()
            pipeline = _pipeline_for(model, options)
            result = await self.run_post(pipeline.postprocess, outputs, meta)
            ticket.finished(time.perf_counter() - t)
            timings["postprocess_ms"] = _ms(t)
            prediction = Prediction("", "", image, result)
            if explain is not None:
                t = time.perf_counter()
                prediction.explanations = await self.run_in_worker(
                    explaining.explain_found, model, result, tensor, meta, explain
                )
                timings["explain_ms"] = _ms(t)
        if explain is not None:
            prediction.explain_method = model.config.explain.method
        timings["total_ms"] = _ms(start)
        return _stamped(prediction, model, timings)

    async def _batched(self, model: ModelVersion, tensor, deadline, timings) -> dict:
        """One row through the version's batcher; queue and compute times into `timings`."""
        batch = await model.batcher.submit({model.config.input.name: tensor[np.newaxis]}, deadline)
        timings["queue_ms"] = batch.queue_s * 1000.0
        timings["inference_ms"] = batch.compute_s * 1000.0
        return {k: v[0] for k, v in batch.outputs.items()}

    async def explain(
        self,
        name: str,
        version: str,
        image: ImageInput,
        class_ids: list[int],
        options: PredictOptions,
        deadline: float | None = None,
        origin: str = "",
        shed: bool = False,
    ) -> Prediction:
        """Predict and explain: a Grad-CAM heat map per finding, from the explain graph.

        Admitted first, as `predict` (`shed`: refuse at once when the model is at capacity).
        """
        model = self._get(name, version)
        explaining.check_explain(model, ExplainOptions())
        with self._tracked("explain", model, deadline):
            async with self.admission.ticket(model, deadline, shed):
                prediction = await self._explain(model, image, class_ids, options, deadline)
        self._notify("explain", origin, prediction)
        return prediction

    async def _explain(
        self, model: ModelVersion, image: ImageInput, class_ids: list[int], options, deadline
    ) -> Prediction:
        start = time.perf_counter()
        image, tensor, meta, timings = await self.run_in_worker(self._prepare, model, image)
        if model.config.task == "detection":
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError("the deadline passed before inference")
            t = time.perf_counter()
            pipeline = _pipeline_for(model, options)
            done = await self.run_in_worker(
                explaining.detect_and_explain_in_one_pass, model, pipeline, tensor, meta
            )
            if done is None:  # the plain run finds the boxes, then the whole explain graph
                outputs = await self._batched(model, tensor, deadline, timings)
                t = time.perf_counter()
                done = await self.run_in_worker(
                    explaining.explain_detections, model, pipeline, outputs, tensor, meta
                )
        else:
            t = time.perf_counter()
            done = await self.run_in_worker(
                explaining.explain_segmentation, model, tensor, meta, class_ids
            )
        timings["explain_ms"] = _ms(t)  # graph run, postprocess and heat maps
        timings["total_ms"] = _ms(start)
        prediction = Prediction("", "", image, done.result, explanations=done.explanations)
        prediction.explain_method = model.config.explain.method
        return _stamped(prediction, model, timings)

    def _prepare(self, model: ModelVersion, image: ImageInput):
        """Decode (when given a source) and preprocess in one worker job."""
        start = time.perf_counter()
        if isinstance(image, ImageSource):
            image = decode(image, self._max_pixels, model.config.preprocess.dicom_window)
        timings = {"decode_ms": _ms(start)}
        t = time.perf_counter()
        tensor, meta = model.pipeline.preprocess(image)
        timings["preprocess_ms"] = _ms(t)
        return image, tensor, meta, timings

    # --- raw tensors (KServe v2) ----------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str,
        feeds: dict[str, np.ndarray],
        deadline: float | None,
        shed: bool = True,
    ) -> InferResult:
        """Run raw tensors through the model's batcher, once admitted (`shed`: refuse at once
        when the model is at capacity or the deadline cannot be met)."""
        model = self._get(name, version)
        rows = check_batch_rows(feeds, model.config.batching.max_batch_size)
        with self._tracked("infer", model, deadline):
            model.session.check_feeds(feeds)
            async with self.admission.ticket(model, deadline, shed, rows):
                try:
                    batch = await model.batcher.submit(feeds, deadline)
                except BatcherClosedError:
                    model = self._get(name, version)
                    batch = await model.batcher.submit(feeds, deadline)
        return InferResult(model.name, model.version, batch.outputs)

    async def infer_unread(
        self, name: str, version: str, read: RawReader, shed: bool = True
    ) -> InferResult:
        """`infer` for a request whose body is not read yet (KServe REST): admitted on the
        model's gate first, then `read()` reads and decodes it into (feeds, deadline), then
        the deadline and rows are checked as `infer` does. A refused request costs no read."""
        model = self._get(name, version)
        with self._tracked("infer", model):
            async with self.admission.ticket(model, None, shed) as ticket:
                feeds, deadline = await read()
                rows = check_batch_rows(feeds, model.config.batching.max_batch_size)
                model.session.check_feeds(feeds)
                self.admission.settle(ticket, model, deadline, rows)
                try:
                    batch = await model.batcher.submit(feeds, deadline)
                except BatcherClosedError:
                    model = self._get(name, version)
                    batch = await model.batcher.submit(feeds, deadline)
        return InferResult(model.name, model.version, batch.outputs)

    def _tracked(self, api: str, model: ModelVersion, deadline: float | None = None):
        """Account for the request the `with` block serves (`serving/accounting.py`)."""
        return track(self.metrics, self.stats, api, model, deadline)

    # --- lifecycle ------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """From now on the server reports not ready; requests are still served (`drain`)."""
        self._shutting_down = True

    async def drain(self, timeout: float) -> bool:
        """Refuse new predictions and inferences (UNAVAILABLE, retry elsewhere), then wait until
        every admitted one has been answered (at most `timeout` s); whether all were."""
        self.admission.begin_shutdown()
        log.info("drain: %d admitted request(s) to finish", self.admission.in_flight)
        idle = await self.admission.wait_idle(timeout)
        if idle:
            log.info("drain: no admitted request left")
            return True
        left = self.admission.in_flight
        log.warning(
            "drain: %d request(s) still running after %.1f s: answering UNAVAILABLE", left, timeout
        )
        # Every batcher stops now: queued and running requests are answered UNAVAILABLE, and
        # the ones still decoding find their model gone; then they are given a moment to reply.
        await self._repository.close(drain_timeout=0.0)
        await self.admission.wait_idle(_ANSWER_GRACE_S)
        return False

    def close(self) -> None:
        """Release the postprocessing threads (after the drain)."""
        self._post.shutdown(wait=False)


_ANSWER_GRACE_S = 1.0  # for requests refused at the drain timeout to send their answer

_RPC_OF_TASK = {
    "detection": "Detect",
    "segmentation": "Segment",
    VOLUMETRIC: "SegmentVolume",
}


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
