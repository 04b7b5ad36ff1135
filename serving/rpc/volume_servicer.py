"""vision.v1 `SegmentVolume`: the request as a `VolumeSource`, the masks as 3D run lengths.

`VolumeServicer` mixes the method into the streaming servicer; `serving/rpc/server.py`
registers it. A volume is admitted before its series is assembled and shed like the unary
image calls (RESOURCE_EXHAUSTED with a retry hint when the model has no room for its windows).
Errors (a refused series, too many voxels, a model of another task) reach the client through
the error-mapping interceptor like every other call's.
"""

from __future__ import annotations

import time

from protos.vision.v1 import vision_pb2 as pb
from serving.dataplane import VolumePrediction, VolumeSource
from serving.rpc.inspect_servicer import StreamingVisionServicer
from serving.rpc.vision_servicer import ORIGIN, deadline_of
from vision.errors import InvalidInputError
from vision.masks import encode_rle
from vision.volume.types import VolumeMask

_VOLUME_DTYPES = {
    pb.PIXEL_TYPE_UINT8: "uint8",
    pb.PIXEL_TYPE_UINT16: "uint16",
    pb.PIXEL_TYPE_INT16: "int16",
    pb.PIXEL_TYPE_FLOAT32: "float32",
}
_TIMINGS = ("decode_ms", "preprocess_ms", "queue_ms", "inference_ms", "postprocess_ms", "total_ms")


def volume_source(request: pb.SegmentVolumeRequest) -> VolumeSource:
    """The request's series or raw volume as the data plane takes it."""
    kind = request.WhichOneof("source")
    if kind == "series":
        return VolumeSource(instances=tuple(request.series.instances))
    if kind == "volume":
        raw = request.volume
        if raw.dtype not in _VOLUME_DTYPES:
            raise InvalidInputError(
                "volume.dtype must be PIXEL_TYPE_UINT8, PIXEL_TYPE_INT16, PIXEL_TYPE_UINT16 or "
                "PIXEL_TYPE_FLOAT32"
            )
        return VolumeSource(
            raw=raw.data,
            shape=tuple(raw.shape),
            dtype=_VOLUME_DTYPES[raw.dtype],
            spacing_mm=tuple(raw.spacing_mm),
            origin_mm=tuple(raw.origin_mm),
            direction=tuple(raw.direction),
        )
    raise InvalidInputError("the request has no volume: set series or volume")


def _mask_message(mask: VolumeMask) -> pb.VolumeMask:
    slices = mask.mask.any(axis=(1, 2)).nonzero()[0]
    counts = mask.run_lengths if mask.run_lengths is not None else encode_rle(mask.mask)
    return pb.VolumeMask(
        class_id=mask.class_id,
        label=mask.label,
        score=mask.score,
        voxel_count=mask.voxel_count,
        volume_mm3=mask.volume_mm3,
        rle=pb.RunLengthMask(counts=counts),
        slices=[int(s) for s in slices],
    )


def encode_volume(prediction: VolumePrediction) -> pb.SegmentVolumeResponse:
    """The response message (run in a worker: run lengths of whole volumes take a while)."""
    start = time.perf_counter()
    masks = [_mask_message(m) for m in prediction.result.masks]
    encode_ms = (time.perf_counter() - start) * 1000.0
    timings = dict(prediction.timings)
    for key in ("postprocess_ms", "total_ms"):
        timings[key] = timings.get(key, 0.0) + encode_ms
    volume = prediction.volume
    return pb.SegmentVolumeResponse(
        model_name=prediction.model,
        model_version=prediction.version,
        shape=list(volume.shape),
        spacing_mm=[float(s) for s in volume.spacing_mm],
        masks=masks,
        timings=pb.Timings(**{k: timings.get(k, 0.0) for k in _TIMINGS}),
        windows=prediction.windows,
    )


class VolumeServicer(StreamingVisionServicer):
    """The streaming vision.v1 servicer plus `SegmentVolume`."""

    async def SegmentVolume(  # noqa: N802
        self, request: pb.SegmentVolumeRequest, context
    ) -> pb.SegmentVolumeResponse:
        """Per-label 3D masks (run lengths over [D, H, W]) and volumes in mm³."""
        prediction = await self._plane.segment_volume(
            request.model.name,
            request.model.version,
            volume_source(request),
            deadline_of(context),
            origin=ORIGIN,
            shed=True,
        )
        return await self._plane.run_in_worker(encode_volume, prediction)
