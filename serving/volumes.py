"""Volumetric segmentation in the server: assemble, preprocess, sliding windows, blend, masks.

`segment_volume` is the data plane's volumetric path (`DataPlane.segment_volume` calls it): in
the worker pool a `VolumeSource` (a DICOM series' Part-10 instances, or raw voxels with their
geometry) becomes a `vision.volume.Volume` (a series read by `read_series`: headers parsed up
to PixelData, pixel data left in the request's bytes, integer values kept as integers) and
`VolumePipeline.preprocess` normalises and resamples it to the model's spacing — for a model
without mirroring whose grid keeps the slices, a row of windows at a time in the worker pool
(`_SlabFill`), each window sent once its slices are filled, so the later rows' preprocessing
runs beside the first rows' inference; every sliding window of the padded tensor then goes
through the model version's dynamic batcher on its own (a bounded number in flight), so the
windows of one volume batch together and with other requests; each window's output is blended
(`vision.volume.Blender`, MONAI's weighting) as it comes back — a two-class argmax model's as its
logit difference alone (class 1's probability is its logistic, the argmax its sign: half the
blending, one channel after it). Such a model's one pass (no mirroring; class 0 without a
mask) is postprocessed a slab at a time while later windows still run
(`vision.volume.pipeline.ClassOneSlabs`): the windows go to the batcher in z order, and once
no window still to come touches a slab of slices (`Blender.final_depth`) the slab is divided,
turned into probabilities, labels and the output slices it decides in the worker pool; only
the last slab and the masks' scores are left when the last window returns. The masks are the
same bit for bit. With test-time mirroring
(`volume.tta_flips`) this runs once more per flip on the flipped tensor; each pass's
probabilities are flipped back and averaged (`vision.volume.tta.ProbabilityMean`), and
`VolumePipeline.postprocess_probabilities` maps them back to the volume's grid (and
orientation) as per-label masks with their volumes. `windows` counts the windows of all passes.
Everything here is per call: no state is kept between requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.config import DEFAULT_MAX_VOLUME_VOXELS
from serving.repository import ModelVersion
from vision.errors import ImageTooLargeError, InvalidInputError
from vision.volume.sources import volume_from_raw
from vision.volume.tta import ProbabilityMean, flip_spatial
from vision.volume.types import Volume, VolumeResult
from vision.volume.window import Blender, PadSpec, Window, pad_to_patch, plan_windows

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from vision.volume.pipeline import ClassOneSlabs, SlabbedInput, VolumePipeline

Worker = Callable[..., Awaitable[Any]]
VOLUMETRIC = "volumetric_segmentation"
__all__ = [
    "DEFAULT_MAX_VOLUME_VOXELS",
    "VolumePrediction",
    "VolumeSource",
    "WindowedOutput",
    "infer_windows",
    "segment_volume",
]


@dataclass(frozen=True)
class VolumeSource:
    """A volume as a client sent it: a series' DICOM Part-10 instances (any order), or raw
    voxels [D, H, W] (`dtype` uint8 / int16 / uint16 / float32, little-endian) with spacing
    (slice, row, column mm), origin (x, y, z mm) and 3x3 direction rows; empty: the defaults."""

    instances: tuple[bytes, ...] = ()
    raw: bytes = b""
    shape: tuple[int, ...] = ()
    dtype: str = ""
    spacing_mm: tuple[float, ...] = ()
    origin_mm: tuple[float, ...] = ()
    direction: tuple[float, ...] = ()


@dataclass
class VolumePrediction:
    """What `segment_volume` returns: the volume as assembled, its masks, timings, windows."""

    model: str
    version: str
    volume: Volume
    result: VolumeResult
    timings: dict[str, float] = field(default_factory=dict)
    windows: int = 0


VolumeInput = Volume | VolumeSource


def read_series(instances: Sequence[bytes]) -> list[Dataset]:
    """The instances as pydicom datasets; InvalidInputError names the one that is not DICOM.

    `vision.io.dicom_series.read_instance`: what `pydicom.dcmread` reads, with an uncompressed
    instance's PixelData left as a view of its bytes (no copy before the volume takes it).
    """
    # in a worker, on the first series: pydicom is not needed to reach SERVING
    from vision.io.dicom_series import read_instance

    if not instances:
        raise InvalidInputError("the series has no instances: send at least one DICOM file")
    datasets = []
    for index, data in enumerate(instances):
        try:
            datasets.append(read_instance(data))
        except Exception as exc:  # pydicom raises many types on truncated or foreign files
            raise InvalidInputError(
                f"instance {index} of the series is not a readable DICOM Part-10 file "
                f"({type(exc).__name__}); send complete files"
            ) from exc
    return datasets


def assemble(source: VolumeInput, max_voxels: int) -> Volume:
    """The `Volume` of `source` (a `Volume` is checked against the voxel limit only)."""
    if isinstance(source, Volume):
        check_voxels(source.shape, max_voxels)
        return source
    if source.instances:
        from vision.volume.series import volume_from_datasets  # pydicom: first series only

        datasets = read_series(source.instances)
        return volume_from_datasets(datasets, max_voxels, keep_integers=True)
    if not source.raw:
        raise InvalidInputError("the request has no volume: set series or volume")
    direction = np.asarray(source.direction, dtype=np.float64) if source.direction else None
    if direction is not None and direction.size == 9:
        direction = direction.reshape(3, 3)
    return volume_from_raw(
        source.raw,
        source.shape,
        source.dtype,
        source.spacing_mm or (1.0, 1.0, 1.0),
        source.origin_mm or (0.0, 0.0, 0.0),
        direction,
        max_voxels,
        keep_integers=True,  # normalised a slice at a time in preprocess: no float32 copy
    )


def check_voxels(shape: Sequence[int], max_voxels: int, where: str = "the volume") -> None:
    """ImageTooLargeError when `shape` holds more than `max_voxels` voxels (0: no limit)."""
    count = int(np.prod([int(s) for s in shape]))
    if max_voxels and count > max_voxels:
        raise ImageTooLargeError(
            f"{where} has {count} voxels ({' x '.join(map(str, shape))}); this server takes at "
            f"most {max_voxels} (--max-volume-voxels)"
        )


def _prepare(model: ModelVersion, source: VolumeInput, max_voxels: int, slabbed: bool):
    """Worker job: assemble, then preprocess (normalise, resample to the model's spacing);
    with `slabbed`, where the grid allows it (`VolumePipeline.slabbed_input`, no padding to
    the patch), the input is only allocated: `_SlabFill` fills it while windows run.

    The volume pipeline (scipy.ndimage, OpenCV) is imported here, in the worker, by the first
    volume: a server reaches SERVING without it and the event loop never waits on the import.
    """
    from vision.volume.pipeline import VolumePipeline

    start = time.perf_counter()
    volume = assemble(source, max_voxels)
    timings = {"decode_ms": _ms(start)}
    t = time.perf_counter()
    pipeline = VolumePipeline(model.config)
    slabs = pipeline.slabbed_input(volume) if slabbed else None
    patch = model.config.volume.patch
    if slabs is not None and all(
        n >= p for n, p in zip(slabs.meta.model_shape, patch, strict=True)
    ):
        tensor, meta = slabs.tensor, slabs.meta
    else:
        (tensor, meta), slabs = pipeline.preprocess(volume), None
    check_voxels(tensor.shape[1:], max_voxels, "the volume resampled to the model's spacing")
    timings["preprocess_ms"] = _ms(t)
    return volume, pipeline, meta, tensor, timings, slabs


async def segment_volume(
    model: ModelVersion,
    source: VolumeInput,
    deadline: float | None,
    run_in_worker: Worker,
    max_voxels: int,
) -> VolumePrediction:
    """One volume through `model` (a volumetric version); see the module docstring."""
    start = time.perf_counter()
    one_pass = not model.config.volume.tta_flips  # a mirrored pass needs the whole input
    volume, pipeline, meta, tensor, timings, filling = await run_in_worker(
        _prepare, model, source, max_voxels, one_pass
    )
    mean, windows, post_s, folded = ProbabilityMean(), 0, 0.0, False
    timings.update(sliding_window_ms=0.0, queue_ms=0.0, inference_ms=0.0)
    passes = pipeline.passes()
    fold = pipeline.folds_two_classes()
    slabs = pipeline.two_class_slabs(meta) if fold else None  # one pass only
    for axes in passes:  # test-time mirroring: () alone unless the config lists flips
        t = time.perf_counter()
        flipped = flip_spatial(tensor, axes)
        fill = _SlabFill(filling, model.config.volume, run_in_worker) if filling else None
        try:
            inferred = await infer_windows(
                model, flipped, deadline, run_in_worker, fold, slabs, fill
            )
        finally:
            if fill is not None:
                await fill.close()
                timings["preprocess_ms"] += fill.seconds * 1000.0
        timings["sliding_window_ms"] += _ms(t)
        timings["queue_ms"] += inferred.queue_ms / len(passes)
        timings["inference_ms"] += inferred.inference_ms
        windows += len(inferred.windows)
        folded = inferred.folded
        if inferred.slabs is None:
            t = time.perf_counter()
            await run_in_worker(_add_pass, pipeline, mean, inferred, axes)
            post_s += time.perf_counter() - t
    t = time.perf_counter()
    if inferred.slabs is not None:  # the one pass, postprocessed as its windows ran
        result = await run_in_worker(inferred.slabs.result)
    else:
        finish = pipeline.postprocess_two_classes if folded else pipeline.postprocess_probabilities
        result = await run_in_worker(finish, mean.result(), meta)
    timings["postprocess_ms"] = _ms(t) + post_s * 1000.0
    timings["total_ms"] = _ms(start)
    return VolumePrediction(model.name, model.version, volume, result, timings, windows)


def _add_pass(
    pipeline: VolumePipeline, mean: ProbabilityMean, inferred: WindowedOutput, axes
) -> None:
    """Worker job: one pass's blended output as probabilities, flipped back, into the mean
    (a folded pass: class 1's probability alone)."""
    if inferred.folded:
        probs = pipeline.difference_probability(inferred.output)
    else:
        probs = pipeline.probabilities(inferred.output, in_place=True)
    mean.add(probs, axes)


@dataclass
class WindowedOutput:
    """The blended model output [K, D', H', W'] of a preprocessed volume and how it was made:
    the windows, their mean time in the batch queue and their share of the batches' compute.
    `folded`: a two-channel output blended as its logit difference, class 1 minus class 0
    ([1, D', H', W']). `slabs`: the folded output was postprocessed slab by slab as the
    windows ran (`output` is then class 1's probability); `slabs.result()` gives the masks."""

    output: np.ndarray
    windows: list[Window]
    queue_ms: float
    inference_ms: float
    folded: bool = False
    slabs: ClassOneSlabs | None = None


async def infer_windows(
    model: ModelVersion,
    tensor: np.ndarray,
    deadline: float | None,
    run_in_worker: Worker,
    fold_two_classes: bool = False,
    slabs: ClassOneSlabs | None = None,
    fill: _SlabFill | None = None,
) -> WindowedOutput:
    """Every sliding window of `tensor` [C, D', H', W'] through the model's batcher, at most
    `_in_flight(model)` queued at once, each blended as it comes back (MONAI's weighting; the
    model's raw output). The first failure cancels the windows still running and is raised.

    `fold_two_classes` (for an argmax model): a two-channel output is blended as its logit
    difference alone (`Blender.add_difference`, half the blending; `WindowedOutput.folded`).
    `slabs` (with `fold_two_classes`): a folded output's finished slabs go through it in the
    worker pool, one after another, while later windows run (see the module docstring).
    `fill`: `tensor` is being filled a row of windows at a time; each window waits for its
    slices (`_SlabFill.until`)."""
    spec = model.config.volume
    padded, pad = pad_to_patch(tensor, spec.patch)
    windows = plan_windows(padded.shape[1:], spec.patch, spec.overlap)
    state: dict[str, Any] = {"blender": None, "queue_s": 0.0, "compute_s": 0.0, "fold": False}
    lock = asyncio.Lock()  # one blend at a time: windows overlap
    slots = asyncio.Semaphore(_in_flight(model))
    name = model.config.input.name
    stream = _SlabStream(slabs, pad, run_in_worker)

    async def one(window: Window) -> None:
        if fill is not None:
            await fill.until(window[0].stop)
        async with slots:
            # A view: the batcher's concatenation (or ONNX Runtime, for a batch of one) makes
            # the one contiguous copy, off the event loop.
            feed = padded[(slice(None), *window)][np.newaxis]
            batch = await model.batcher.submit({name: feed}, deadline)
        output = _output(batch.outputs, model.config.postprocess.output)[0]
        state["queue_s"] += batch.queue_s
        state["compute_s"] += batch.compute_s / max(batch.batch_size, 1)
        async with lock:
            if state["blender"] is None:
                state["fold"] = fold_two_classes and output.shape[0] == 2
                channels = 1 if state["fold"] else output.shape[0]
                state["blender"] = Blender(
                    channels, padded.shape[1:], spec.patch, spec.blend, spec.sigma_scale, windows
                )
            blender = state["blender"]
            add = blender.add_difference if state["fold"] else blender.add
            await run_in_worker(add, window, output)
            if state["fold"]:
                stream.released(blender)

    try:
        await _all_or_nothing([one(w) for w in windows])
        await stream.drained()
    except BaseException:
        await stream.cancel()
        raise
    blender = state["blender"]
    if stream.used:
        output = await run_in_worker(_last_slab, blender, pad, stream.slabs)
    else:
        output = await run_in_worker(blender.result, pad)
    queue_ms = state["queue_s"] * 1000.0 / len(windows)
    compute_ms = state["compute_s"] * 1000.0
    used = stream.slabs if stream.used else None
    return WindowedOutput(output, windows, queue_ms, compute_ms, state["fold"], used)


class _SlabFill:
    """Fills a `SlabbedInput` in the worker pool, one job per row of windows (up to the
    slices the row's windows end at), in z order; a window awaits `until` its row is filled.
    A failed job is raised to the windows waiting; `close` cancels what is left."""

    def __init__(self, slabs: SlabbedInput, spec: Any, run_in_worker: Worker) -> None:
        padded = slabs.tensor.shape[1:]  # no padding: `_prepare` slabs only then
        stops = sorted({w[0].stop for w in plan_windows(padded, spec.patch, spec.overlap)})
        loop = asyncio.get_running_loop()
        self._done = {stop: loop.create_future() for stop in stops}
        self.seconds = 0.0
        self._task = asyncio.ensure_future(self._run(slabs, stops, run_in_worker))

    async def _run(self, slabs: SlabbedInput, stops: list[int], run_in_worker: Worker) -> None:
        for stop in stops:
            t = time.perf_counter()
            await run_in_worker(slabs.fill, stop)
            self.seconds += time.perf_counter() - t
            self._done[stop].set_result(None)

    async def until(self, stop: int) -> None:
        """Return once the slices before `stop` are filled; raise what filling them raised."""
        done = self._done[stop]
        if not done.done():
            await asyncio.wait((done, self._task), return_when=asyncio.FIRST_COMPLETED)
        if not done.done():  # the filling ended first: failed (or was cancelled)
            self._task.result()
            raise InvalidInputError("the volume's input was not filled")  # not reached

    async def close(self) -> None:
        """Cancel the jobs not started and wait for them (a failure is raised by `until`)."""
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for future in self._done.values():
            future.cancel()


class _SlabStream:
    """The slab jobs of one pass (`ClassOneSlabs`), chained: each starts after the one
    before, in the worker pool, while the event loop keeps feeding windows."""

    def __init__(self, slabs: ClassOneSlabs | None, pad: PadSpec, run_in_worker: Worker) -> None:
        self.slabs = slabs
        self.used = False
        self._pad, self._run = pad, run_in_worker
        self._tasks: list[asyncio.Future] = []
        self._released = 0

    def released(self, blender: Blender) -> None:
        """After a window is added: a job for the slices it made final (not the last ones:
        those go with the result)."""
        if self.slabs is None:
            return
        depth = blender.final_depth()
        if depth <= self._released or depth >= blender.view().shape[1]:
            return
        self._released, self.used = depth, True
        before = self._tasks[-1] if self._tasks else None
        self._tasks.append(asyncio.ensure_future(self._slab(before, blender, depth)))

    async def _slab(self, before: asyncio.Future | None, blender: Blender, depth: int) -> None:
        if before is not None:
            await before
        await self._run(_slab, blender, self._pad, self.slabs, depth)

    async def drained(self) -> None:
        """Wait for every slab job; the first failure is raised."""
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def cancel(self) -> None:
        """Cancel the jobs not started and wait for them all (a failure is not raised again)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _slab(blender: Blender, pad: PadSpec, slabs: ClassOneSlabs, depth: int) -> None:
    """Worker job: divide the padded slices before `depth` and postprocess them."""
    blender.divide_until(depth)
    slabs.advance(blender.view(pad), _model_depth(depth, pad))


def _last_slab(blender: Blender, pad: PadSpec, slabs: ClassOneSlabs) -> np.ndarray:
    """Worker job: the rest divided and postprocessed; class 1's probability."""
    output = blender.result(pad)
    slabs.advance(output, output.shape[1])
    return output


def _model_depth(depth: int, pad: PadSpec) -> int:
    """The model slices before padded slice `depth` (the padding before taken off)."""
    return max(0, depth - pad[0][0])


def _in_flight(model: ModelVersion) -> int:
    """Windows queued at once: two batches' worth, leaving half the queue to other requests."""
    batching = model.config.batching
    return max(1, min(2 * max(batching.max_batch_size, 1), batching.max_queue_size // 2))


def _output(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name:
        if name not in outputs:
            raise InvalidInputError(f"the model has no output {name!r}: {sorted(outputs)}")
        return outputs[name]
    return next(iter(outputs.values()))


async def _all_or_nothing(coroutines: list[Awaitable[None]]) -> None:
    """Run `coroutines` concurrently; on the first error cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
