"""A small Python client for the vision.v1 API."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc as pb_grpc
from serving.config import DEFAULT_MAX_MESSAGE_BYTES
from serving.security.tls import ClientTls
from vision.masks import decode_rle

VolumeArray = tuple  # (voxels, spacing_mm[, origin_mm[, direction]])


class VisionClient:
    """Blocking client: `with VisionClient("localhost:8001") as c: c.detect(model, path)`."""

    def __init__(
        self,
        address: str = "localhost:8001",
        api_key: str = "",
        timeout_s: float | None = 30.0,
        tls: ClientTls | None = None,
    ) -> None:
        size = DEFAULT_MAX_MESSAGE_BYTES
        options = [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
        ]
        if tls is not None:  # `api_key`: any bearer token (docs/security.md)
            self._channel = grpc.secure_channel(address, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.VisionServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout_s

    def __enter__(self) -> VisionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, method, request):
        return method(request, timeout=self._timeout, metadata=self._metadata)

    @staticmethod
    def explain_options(
        classes: Iterable[int] = (), overlay: bool = False, max_findings: int = 0
    ) -> pb.ExplainOptions:
        """What `detect(..., explain=)` / `segment(..., explain=)` take (True: all defaults)."""
        return pb.ExplainOptions(
            class_ids=list(classes), include_overlay=overlay, max_findings=max_findings
        )

    @staticmethod
    def heat(heatmap: pb.Heatmap) -> np.ndarray:
        """A Heatmap's values as a [height, width] float32 array in [0, 1]."""
        values = np.frombuffer(heatmap.data, dtype="<f2").reshape(heatmap.height, heatmap.width)
        return values.astype(np.float32)

    @staticmethod
    def image(source: str | Path | bytes) -> pb.ImageInput:
        """An ImageInput from a file path or encoded bytes (PNG, JPEG, TIFF, BMP, DICOM)."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        return pb.ImageInput(encoded=data)

    def detect(
        self,
        model: str,
        image: str | Path | bytes,
        version: str = "",
        overlay: bool = False,
        score_threshold: float | None = None,
        explain: bool | pb.ExplainOptions = False,
    ) -> pb.DetectResponse:
        """Boxes; with `explain` (True or `explain_options(...)`), a heat map per box too."""
        request = pb.DetectRequest(
            model=pb.ModelRef(name=model, version=version),
            image=self.image(image),
            include_overlay=overlay,
        )
        if score_threshold is not None:
            request.score_threshold = score_threshold
        _set_explain(request, explain)
        return self._call(self._stub.Detect, request)

    def segment(
        self,
        model: str,
        image: str | Path | bytes,
        version: str = "",
        overlay: bool = False,
        rle: bool = False,
        explain: bool | pb.ExplainOptions = False,
    ) -> pb.SegmentResponse:
        """Masks; with `explain` (True or `explain_options(...)`), a heat map per class too."""
        encoding = pb.MASK_ENCODING_RLE if rle else pb.MASK_ENCODING_PNG
        request = pb.SegmentRequest(
            model=pb.ModelRef(name=model, version=version),
            image=self.image(image),
            mask_encoding=encoding,
            include_overlay=overlay,
        )
        _set_explain(request, explain)
        return self._call(self._stub.Segment, request)

    @staticmethod
    def frame(
        image: str | Path | bytes | np.ndarray, sequence: int, capture_time_ns: int = 0
    ) -> pb.Frame:
        """A Frame for `inspect`: encoded bytes or a file, or raw HxW(xC) uint8/uint16/float32."""
        frame = pb.Frame(sequence=sequence, capture_time_unix_ns=capture_time_ns)
        if isinstance(image, np.ndarray):
            frame.image.raw.CopyFrom(_raw_pixels(image))
        else:
            frame.image.CopyFrom(VisionClient.image(image))
        return frame

    def inspect(
        self,
        model: str,
        frames: Iterable[pb.Frame],
        camera_id: str = "",
        policy: str = "every",
        max_in_flight: int = 0,
        stale_after_ms: int = 0,
        version: str = "",
        rle: bool = False,
    ) -> Iterator[pb.Verdict]:
        """Stream `frames` (see `frame`) to `Inspect`; a verdict per frame, in order.

        `policy` is "every" (at most `max_in_flight` frames held by the server, then the frames
        iterator is not pulled until a verdict comes back) or "latest" (frames older than
        `stale_after_ms` when their turn comes are answered DROPPED). The stream has no
        timeout; the returned iterator's `cancel()` ends it.
        """
        if policy not in _POLICIES:
            raise ValueError(f"policy {policy!r} is not one of {sorted(_POLICIES)}")
        config = pb.StreamConfig(
            model=pb.ModelRef(name=model, version=version),
            camera_id=camera_id,
            policy=_POLICIES[policy],
            max_in_flight=max_in_flight,
            stale_after_ms=stale_after_ms,
            mask_encoding=pb.MASK_ENCODING_RLE if rle else pb.MASK_ENCODING_PNG,
        )

        def requests() -> Iterator[pb.InspectRequest]:
            yield pb.InspectRequest(config=config)
            for frame in frames:
                yield pb.InspectRequest(frame=frame)

        return self._stub.Inspect(requests(), metadata=self._metadata)

    def segment_volume(
        self,
        model: str,
        volume: Sequence[str | Path | bytes] | VolumeArray,
        version: str = "",
    ) -> pb.SegmentVolumeResponse:
        """Per-label 3D masks and volumes (mm³) of a series or a raw volume.

        `volume` is a series (paths or Part-10 bytes of its instances, any order), or a tuple
        (voxels [D, H, W] uint8 / int16 / uint16 / float32, spacing (slice, row, column) mm,
        origin (x, y, z) mm, 3x3 direction rows); origin and direction may be left out.
        `volume_mask` turns a returned mask back into an array.
        """
        request = pb.SegmentVolumeRequest(model=pb.ModelRef(name=model, version=version))
        if isinstance(volume, tuple) and volume and isinstance(volume[0], np.ndarray):
            request.volume.CopyFrom(_raw_volume(*volume))
        else:
            data = [v if isinstance(v, bytes) else Path(v).read_bytes() for v in volume]
            request.series.instances.extend(data)
        return self._call(self._stub.SegmentVolume, request)

    @staticmethod
    def volume_mask(mask: pb.VolumeMask, shape: Sequence[int]) -> np.ndarray:
        """A VolumeMask's run lengths as a bool [D, H, W] array (`shape` from the response)."""
        d, h, w = (int(s) for s in shape)
        return decode_rle(list(mask.rle.counts), d * h, w).reshape(d, h, w)

    def list_models(self) -> pb.ListModelsResponse:
        """Every model with its versions and states."""
        return self._call(self._stub.ListModels, pb.ListModelsRequest())

    def metadata(self, model: str, version: str = "") -> pb.ModelMetadata:
        """Task, labels, input spec and runtime of a model version."""
        request = pb.GetModelMetadataRequest(model=pb.ModelRef(name=model, version=version))
        return self._call(self._stub.GetModelMetadata, request)


_POLICIES = {"every": pb.STREAM_POLICY_EVERY, "latest": pb.STREAM_POLICY_LATEST}
_PIXEL_TYPES = {
    np.dtype(np.uint8): pb.PIXEL_TYPE_UINT8,
    np.dtype(np.uint16): pb.PIXEL_TYPE_UINT16,
    np.dtype(np.float32): pb.PIXEL_TYPE_FLOAT32,
}


def _raw_pixels(pixels: np.ndarray) -> pb.RawImage:
    if pixels.dtype not in _PIXEL_TYPES:
        raise ValueError(f"raw frames are uint8, uint16 or float32, not {pixels.dtype}")
    data = np.ascontiguousarray(pixels)
    return pb.RawImage(data=data.tobytes(), shape=list(data.shape), dtype=_PIXEL_TYPES[data.dtype])


_VOLUME_TYPES = {**_PIXEL_TYPES, np.dtype(np.int16): pb.PIXEL_TYPE_INT16}


def _raw_volume(
    voxels: np.ndarray,
    spacing_mm: Sequence[float] = (),
    origin_mm: Sequence[float] = (),
    direction: Sequence[Sequence[float]] | np.ndarray = (),
) -> pb.RawVolume:
    if voxels.ndim != 3 or voxels.dtype not in _VOLUME_TYPES:
        raise ValueError(
            f"raw volumes are [D, H, W] uint8, int16, uint16 or float32, not "
            f"{list(voxels.shape)} {voxels.dtype}"
        )
    data = np.ascontiguousarray(voxels, dtype=voxels.dtype.newbyteorder("<"))
    return pb.RawVolume(
        data=data.tobytes(),
        shape=list(voxels.shape),
        dtype=_VOLUME_TYPES[voxels.dtype],
        spacing_mm=[float(v) for v in spacing_mm],
        origin_mm=[float(v) for v in origin_mm],
        direction=[float(v) for v in np.ravel(np.asarray(direction, dtype=np.float64))],
    )


def _set_explain(
    request: pb.DetectRequest | pb.SegmentRequest, explain: bool | pb.ExplainOptions
) -> None:
    if isinstance(explain, pb.ExplainOptions):
        request.explain.CopyFrom(explain)
    elif explain:
        request.explain.SetInParent()  # present and empty: explain with the defaults
