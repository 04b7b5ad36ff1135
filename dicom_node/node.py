"""The DICOM node, composed: receive → spool → assemble → route → infer → results → outbox.

Instances arrive through the C-STORE SCP (pynetdicom threads) or STOW-RS (the HTTP app) and are
on disk before they are acknowledged. The assembler calls back, from its own thread, with each
complete series; the series is processed on the server's event loop: routed, decoded frame by
frame in the data plane's workers, inferred through the data plane (so the frames of a series
batch together in the model's dynamic batcher, beside the gRPC traffic), turned into SEG, SR and
GSPS objects and queued in the durable outbox, which sends them to the destinations. A series
routed to a volumetric model is assembled as one volume instead (`vision.volume`), segmented by
sliding windows through the same batcher (`DataPlane.segment_volume`) and answered with one
multi-frame SEG and an SR with the volumes (`dicom_node.volume_results`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future

import pydicom
from starlette.routing import BaseRoute

from dicom_node.api import node_routes
from dicom_node.assembly import SeriesAssembler
from dicom_node.jobs import JobStore
from dicom_node.jobs import job_id as make_job_id
from dicom_node.metrics import NodeMetrics
from dicom_node.model import JobState, NodeSettings, Series, SpooledInstance
from dicom_node.outbox import Outbox
from dicom_node.results import RESULT_CONTEXTS, ResultStream, build_results
from dicom_node.routing import RoutingRules
from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
from dicom_node.stow import stow_routes
from dicom_node.volume_results import build_volume_results
from serving.dataplane import DataPlane, ExplainOptions, Prediction, PredictOptions
from serving.volumes import VOLUMETRIC, VolumePrediction
from vision.deid import Deidentifier
from vision.errors import VisionError
from vision.io import decode_frames
from vision.types import Image
from vision.volume.series import volume_from_datasets

log = logging.getLogger(__name__)
ORIGIN = "dicom"


SeriesObserver = Callable[[list[pydicom.Dataset], list[Prediction]], None]
SendAhead = Callable[[list[pydicom.Dataset]], Awaitable[None]]


def job_id(series: Series, model: str) -> str:
    """A job's id: the same series run through the same model is the same job."""
    return make_job_id(series.calling_ae, series.study_uid, series.series_uid, series.run, model)


class DicomNode:
    """One DICOM Application Entity in front of the data plane."""

    def __init__(self, settings: NodeSettings, plane: DataPlane, known_models: set[str]) -> None:
        self.settings = settings
        self.plane = plane
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self.rules = RoutingRules.load(settings.rules_file, known_models=known_models)
        self.spool = Spool(state / "spool")
        self.jobs = JobStore(state / "node.sqlite")
        self.metrics = NodeMetrics(plane.metrics.registry)
        self.outbox = Outbox(
            self.jobs,
            settings.destinations,
            max_retry_delay_s=settings.max_retry_delay_s,
            metrics=self.metrics,
        )
        # PS3.15 de-identification of the results before they leave (vision.deid; off by default).
        key_file = settings.deid_key_file or state / "deid.key"
        self.deid = Deidentifier.from_key_file(key_file) if settings.deid else None
        self.metrics.watch(self.jobs.counts, self.outbox.counts)
        self.assembler = SeriesAssembler(settings, self._on_series_complete)
        self.scp = StorageSCP(settings, self.spool, self.assembler.add, self.assembler.released)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[Future] = set()
        self._series_observers: list[SeriesObserver] = []

    def add_series_observer(self, observer: SeriesObserver) -> None:
        """Call `observer(sources, predictions)` after each 2D series is inferred.

        `sources[i]` is the dataset whose frame `predictions[i]` holds (the review tool
        keeps the series' stored values from them). An observer that raises is logged.
        """
        self._series_observers.append(observer)

    def _notify_series(self, sources: list[pydicom.Dataset], predictions: list[Prediction]) -> None:
        for observer in self._series_observers:
            try:
                observer(sources, predictions)
            except Exception as exc:  # noqa: BLE001 - an observer never fails the job
                log.warning("series observer failed: %s", type(exc).__name__)

    def routes(self) -> list[BaseRoute]:
        """HTTP routes for the server's app: STOW-RS and the job / outbox API."""
        return [*stow_routes(self.spool, self.assembler.add), *node_routes(self.jobs, self.outbox)]

    async def start(self) -> None:
        """Listen for associations, resume spooled instances and the outbox."""
        self._loop = asyncio.get_running_loop()
        self.outbox.start()
        self.assembler.start()
        pending = await self.plane.run_in_worker(self.spool.pending)
        done = self.jobs.processed(i.sop_instance_uid for i in pending)
        waiting = [i for i in pending if i.sop_instance_uid not in done]
        completed = _series_of([i for i in pending if i.sop_instance_uid in done])
        self.assembler.recover(waiting, completed=completed)
        if waiting:
            log.info("resuming %d spooled instance(s) not yet processed", len(waiting))
        self.port = await self.plane.run_in_worker(self.scp.start)
        log.info(
            "DICOM node %s listening on port %d, %d destination(s)",
            self.settings.ae_title,
            self.port,
            len(self.settings.destinations),
        )

    async def stop(self) -> None:
        """Stop accepting associations; finish the series being processed; stop sending."""
        await self.plane.run_in_worker(self.scp.stop)
        self.assembler.stop()
        if self._running:
            await asyncio.gather(
                *(asyncio.wrap_future(f) for f in list(self._running)), return_exceptions=True
            )
        await self.plane.run_in_worker(self.outbox.stop)

    async def _job(
        self, job: str, state: JobState, *, durable: bool = True, **fields: object
    ) -> None:
        """Record a job's state off the event loop (fsynced unless `durable=False`: see
        `JobStore.upsert`)."""
        upsert = functools.partial(self.jobs.upsert, job, state, durable=durable, **fields)
        await self.plane.run_in_worker(upsert)

    def _on_series_complete(self, series: Series) -> None:
        """Called from the assembler's thread: process the series on the event loop."""
        if self._loop is None or self._loop.is_closed():
            log.error("series completed while the node is stopped; it stays in the spool")
            return
        future = asyncio.run_coroutine_threadsafe(self.process(series), self._loop)
        self._running.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future) -> None:
        self._running.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("series processing failed", exc_info=future.exception())

    async def process(self, series: Series) -> None:
        """Route one complete series and run it through each model its rule names."""
        datasets = [await self.plane.run_in_worker(self.spool.load, i) for i in series.instances]
        route = self.rules.match(datasets[0])
        if route is None:
            fields = _series_fields(series)
            await self._job(job_id(series, ""), JobState.SET_ASIDE, **fields, reason="no rule")
            log.info("a series of %d instance(s) matched no routing rule: set aside", len(datasets))
        else:
            for model in route.models:
                await self._run_model(series, datasets, model, route.rule)
        uids = [i.sop_instance_uid for i in series.instances]
        await self.plane.run_in_worker(self.jobs.mark_processed, uids)

    async def _run_model(
        self, series: Series, datasets: list[pydicom.Dataset], model: str, rule: str
    ) -> None:
        job = job_id(series, model)
        fields = {**_series_fields(series), "model": model, "rule": rule}
        # `received` and `inferred` are not fsynced: until the job's results are queued
        # (durably) its source instances are not marked processed, so a job whose marks a power
        # cut lost runs again from the spool on restart, with the same result UIDs
        await self._job(job, JobState.RECEIVED, durable=False, **fields, assembled_at=time.time())
        ahead: list[str] = []  # SOP Instance UIDs of results queued while the series is inferred
        if len(datasets) == 1:
            # one instance: nothing is sent ahead, so an association held open while it is
            # inferred blocks no other send (dcmtk's storescp serves one at a time)
            self.outbox.warm(job, RESULT_CONTEXTS)
        try:
            if self.plane.model_info(model).config.task == VOLUMETRIC:
                volume = await self._infer_volume(datasets, model)
                build = functools.partial(self._volume_results, datasets, volume, model)
                inferred_at = time.time()
                results = await self.plane.run_in_worker(build)
            else:
                sources, predictions, results, inferred_at = await self._infer_2d(
                    datasets, model, functools.partial(self._send_ahead, job, ahead)
                )
                self._notify_series(sources, predictions)
            # one commit for both marks (not fsynced: see `received` above)
            encoded_at = time.time()
            marks = {"inferred_at": inferred_at, "encoded_at": encoded_at}
            await self._job(job, JobState.INFERRED, durable=False, **marks)
            if self.deid is not None:  # de-identified: UIDs mapped under the node's key
                results = await self.plane.run_in_worker(self.deid.apply_all, results)
            rest = [ds for ds in results if str(ds.SOPInstanceUID) not in set(ahead)]
            # sent while written, rows committed with the outcomes (`dicom_node.outbox_direct`):
            # until then the sources are not marked processed, so a crash re-runs the job
            enqueue = functools.partial(
                self.outbox.enqueue, job, rest, mark_queued=True, earlier=ahead, send_now=True
            )
            await self.plane.run_in_worker(enqueue)  # queued_at and results in the same commit
        except (VisionError, ValueError) as exc:
            # Domain errors' and the result builder's messages never carry patient attributes.
            await self._job(job, JobState.FAILED, reason=f"{type(exc).__name__}: {exc}")
            log.warning("job %s (%s) failed: %s", job, model, type(exc).__name__)
        finally:
            self.outbox.cool(job)  # whatever the send did not use

    async def _send_ahead(self, job: str, ahead: list[str], parts: list[pydicom.Dataset]) -> None:
        """Queue finished SEGs while the rest of the series is inferred (not when results are
        de-identified: that maps every result together, at the end)."""
        if self.deid is not None or not parts:
            return
        enqueue = functools.partial(self.outbox.enqueue, job, parts, ahead=True)
        await self.plane.run_in_worker(enqueue)
        ahead.extend(str(ds.SOPInstanceUID) for ds in parts)

    async def _infer_2d(
        self, datasets: list[pydicom.Dataset], model: str, send_ahead: SendAhead
    ) -> tuple[list[pydicom.Dataset], list[Prediction], list[pydicom.Dataset], float]:
        """Every frame of every instance through the data plane, concurrently (they batch), and
        the results built as instances complete: (sources, predictions, results, inferred_at).

        A series whose instances get one SEG each (`ResultStream.streams`) has each instance's
        SEG, SR groups and annotations built in a worker as soon as its frames are inferred,
        while later frames still are, and its SEG handed to `send_ahead` (queued, so sent
        meanwhile); the SR and presentation states are finished after the last. Other series
        are built at once after the last frame.
        """
        info = self.plane.model_info(model)
        frames = await self.plane.run_in_worker(self._frames, datasets)
        explain = ExplainOptions() if self.settings.heatmaps and info.explainable else None
        options = PredictOptions(explain=explain)
        task = info.config.task
        pending = [
            asyncio.ensure_future(
                self.plane.predict(task, model, "", image, options, origin=ORIGIN)
            )
            for _, image in frames
        ]
        sources = [ds for ds, _ in frames]
        results: list[pydicom.Dataset] | None = None
        try:
            if ResultStream.streams(sources):
                streamed = await self._stream_results(sources, pending, model, send_ahead)
                results, inferred_at = streamed
            else:
                await asyncio.gather(*pending)
                inferred_at = time.time()
        finally:
            for future in pending:
                future.cancel()  # a frame failed: the others are not waited for
        predictions = [future.result() for future in pending]
        if results is None:
            build = functools.partial(self._results, sources, predictions, model)
            results = await self.plane.run_in_worker(build)
        return sources, predictions, results, inferred_at

    async def _stream_results(
        self,
        sources: list[pydicom.Dataset],
        pending: list[asyncio.Future],
        model: str,
        send_ahead: SendAhead,
    ) -> tuple[list[pydicom.Dataset], float]:
        """`ResultStream` fed instance by instance as predictions complete; (results, inferred)."""
        stream: ResultStream | None = None
        results: list[pydicom.Dataset] = []
        spans = _instance_spans(sources)
        inferred_at = time.time()
        for n, (start, end) in enumerate(spans, start=1):
            predictions = list(await asyncio.gather(*pending[start:end]))
            inferred_at = time.time()  # the last span's: every frame inferred
            if stream is None:
                stream = self._stream(model, predictions[0].version)
            add = functools.partial(stream.add, sources[start:end], predictions)
            parts = await self.plane.run_in_worker(add)
            if n < len(spans):  # the last instance's SEG goes with the SR and GSPS: one write,
                await send_ahead(parts)  # one fsync and one association instead of two
            results += parts
        assert stream is not None  # a series has at least one frame
        results += await self.plane.run_in_worker(stream.finish)
        return results, inferred_at

    def _stream(self, model: str, version: str) -> ResultStream:
        info = self.plane.model_info(model, version)
        explainable = self.settings.heatmaps and info.explainable
        return ResultStream(model, version, info.config.labels, heatmaps=explainable)

    def _frames(self, datasets: Sequence[pydicom.Dataset]) -> list[tuple[pydicom.Dataset, Image]]:
        max_pixels = self.plane.max_image_pixels
        return [(ds, image) for ds in datasets for image in decode_frames(ds, max_pixels, True)]

    def _results(
        self, sources: list[pydicom.Dataset], predictions: list[Prediction], model: str
    ) -> list[pydicom.Dataset]:
        info = self.plane.model_info(model, predictions[0].version)
        return build_results(
            sources,
            predictions,
            model,
            predictions[0].version,
            info.config.labels,
            heatmaps=self.settings.heatmaps and info.explainable,
        )

    # --- volumetric models: the series as one volume ------------------------------------------

    async def _infer_volume(self, datasets: list[pydicom.Dataset], model: str) -> VolumePrediction:
        """The series assembled as one volume (refusals name the problem) and segmented."""
        limit = self.plane.max_volume_voxels
        volume = await self.plane.run_in_worker(volume_from_datasets, datasets, limit)
        return await self.plane.segment_volume(model, "", volume, origin=ORIGIN)

    def _volume_results(
        self, sources: list[pydicom.Dataset], prediction: VolumePrediction, model: str
    ) -> list[pydicom.Dataset]:
        info = self.plane.model_info(model, prediction.version)
        return build_volume_results(
            sources, prediction, model, prediction.version, info.config.labels
        )


def _instance_spans(sources: list[pydicom.Dataset]) -> list[tuple[int, int]]:
    """[start, end) of each run of frames from the same source instance (frames are in order)."""
    spans: list[tuple[int, int]] = []
    for i, ds in enumerate(sources):
        if spans and sources[spans[-1][0]] is ds:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def _series_of(instances: list[SpooledInstance]) -> list[Series]:
    """Processed instances grouped back into their series (so a late instance re-runs them)."""
    groups: dict[tuple[str, str, str], Series] = {}
    for i in instances:
        key = (i.calling_ae, i.study_uid, i.series_uid)
        groups.setdefault(key, Series(i.study_uid, i.series_uid, i.calling_ae)).instances.append(i)
    return list(groups.values())


def _series_fields(series: Series) -> dict[str, object]:
    last = max((i.received_at for i in series.instances), default=time.time())
    return {
        "calling_ae": series.calling_ae,
        "study_uid": series.study_uid,
        "series_uid": series.series_uid,
        "run": series.run,
        "instances": len(series.instances),
        "received_at": last,
    }
