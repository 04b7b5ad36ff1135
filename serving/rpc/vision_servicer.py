"""vision.v1 servicer: thin translation between protobuf messages and the data plane.

Detect, Segment and Explain are shed: over the model's admission bound, or with a deadline that
cannot be met, they are refused before decoding (RESOURCE_EXHAUSTED, with a retry hint), and
their wire encoding runs in the data plane's postprocessing pool.
"""

from __future__ import annotations

import time

import grpc

from protos.vision.v1 import vision_pb2 as pb
from protos.vision.v1 import vision_pb2_grpc as pb_grpc
from serving.dataplane import DataPlane, ExplainOptions, ImageSource, Prediction, PredictOptions
from serving.encoding import EncodedPrediction, WireOptions, encode_prediction
from serving.model_info import LOADING, READY, ModelStatus
from vision.errors import InvalidInputError
from vision.types import ClassMask, Detection, DetectionResult
from vision.xai.explainer import Explanation, heat_to_float16_bytes

ORIGIN = "vision.v1"

_DTYPES = {
    pb.PIXEL_TYPE_UINT8: "uint8",
    pb.PIXEL_TYPE_UINT16: "uint16",
    pb.PIXEL_TYPE_FLOAT32: "float32",
}
_STATES = {READY: pb.MODEL_STATE_READY, LOADING: pb.MODEL_STATE_LOADING}


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value, or None when the client set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def image_source(image: pb.ImageInput) -> ImageSource:
    """The request's image as the data plane takes it."""
    kind = image.WhichOneof("source")
    if kind == "encoded":
        return ImageSource(encoded=image.encoded)
    if kind == "raw":
        if image.raw.dtype not in _DTYPES:
            raise InvalidInputError(
                "image.raw.dtype must be PIXEL_TYPE_UINT8, PIXEL_TYPE_UINT16 or PIXEL_TYPE_FLOAT32"
            )
        return ImageSource(
            raw=image.raw.data, shape=tuple(image.raw.shape), dtype=_DTYPES[image.raw.dtype]
        )
    raise InvalidInputError("the request has no image: set image.encoded or image.raw")


def _timings(prediction: Prediction) -> pb.Timings:
    return pb.Timings(**prediction.timings)


def _detection_message(d: Detection) -> pb.Detection:
    return pb.Detection(
        box=pb.Box(x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2),
        score=d.score,
        class_id=d.class_id,
        label=d.label,
    )


def explain_options(request: pb.DetectRequest | pb.SegmentRequest) -> ExplainOptions | None:
    """The request's explain options, or None when it did not set `explain`."""
    if not request.HasField("explain"):
        return None
    e = request.explain
    return ExplainOptions(class_ids=tuple(e.class_ids), max_findings=e.max_findings)


def _wants_heat_overlays(request: pb.DetectRequest | pb.SegmentRequest) -> bool:
    return request.HasField("explain") and request.explain.include_overlay


def _heatmaps(prediction: Prediction, encoded: EncodedPrediction) -> list[pb.Heatmap]:
    overlays = encoded.heat_overlays or [b""] * len(prediction.explanations)
    return [_heatmap_message(e, o) for e, o in zip(prediction.explanations, overlays, strict=True)]


def _heatmap_message(explanation: Explanation, overlay: bytes) -> pb.Heatmap:
    heat = explanation.heat
    message = pb.Heatmap(
        class_id=explanation.class_id,
        label=explanation.label,
        width=heat.shape[1],
        height=heat.shape[0],
        data=heat_to_float16_bytes(heat),
        overlay_png=overlay,
    )
    if explanation.detection is not None:
        message.detection.CopyFrom(_detection_message(explanation.detection))
    return message


def _mask_message(
    mask: ClassMask, encoded: bytes | list[int], spacing: tuple[float, float] | None
) -> pb.Mask:
    message = pb.Mask(
        class_id=mask.class_id, label=mask.label, score=mask.score, pixel_area=mask.pixel_area
    )
    if spacing is not None:
        message.physical_area_mm2 = mask.pixel_area * spacing[0] * spacing[1]
    if isinstance(encoded, bytes):
        message.png = encoded
    else:
        message.rle.counts.extend(encoded)
    return message


def _model_summary(status: ModelStatus) -> pb.ModelSummary:
    versions = [
        pb.ModelVersionStatus(
            version=v.version,
            state=_STATES.get(v.state, pb.MODEL_STATE_UNAVAILABLE),
            reason=v.reason,
        )
        for v in status.versions
    ]
    return pb.ModelSummary(name=status.name, task=status.task, versions=versions)


def _threshold(request: pb.DetectRequest | pb.ExplainRequest, name: str) -> float | None:
    return getattr(request, name) if request.HasField(name) else None


class VisionServicer(pb_grpc.VisionServiceServicer):
    """Detect, Segment, Explain, ListModels and GetModelMetadata over the data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def _encoded(self, prediction: Prediction, options: WireOptions) -> EncodedPrediction:
        return await self._plane.run_post(encode_prediction, prediction, options)

    async def Detect(self, request: pb.DetectRequest, context) -> pb.DetectResponse:  # noqa: N802
        """Boxes (and heat maps when asked) for one image."""
        options = PredictOptions(
            score_threshold=_threshold(request, "score_threshold"),
            iou_threshold=_threshold(request, "iou_threshold"),
            explain=explain_options(request),
        )
        prediction = await self._plane.predict(
            "detection",
            request.model.name,
            request.model.version,
            image_source(request.image),
            options,
            deadline_of(context),
            origin=ORIGIN,
            shed=True,
        )
        wire = WireOptions(
            overlay=request.include_overlay, heat_overlays=_wants_heat_overlays(request)
        )
        encoded = await self._encoded(prediction, wire)
        assert isinstance(prediction.result, DetectionResult)
        detections = [_detection_message(d) for d in prediction.result.detections]
        return pb.DetectResponse(
            model_name=prediction.model,
            model_version=prediction.version,
            image_size=pb.ImageSize(width=prediction.image.width, height=prediction.image.height),
            detections=detections,
            timings=_timings(prediction),
            overlay_png=encoded.overlay_png,
            heatmaps=_heatmaps(prediction, encoded),
            explain_method=prediction.explain_method,
        )

    async def Segment(self, request: pb.SegmentRequest, context) -> pb.SegmentResponse:  # noqa: N802
        """Masks, image score (and heat maps when asked) for one image."""
        options = PredictOptions(explain=explain_options(request))
        prediction = await self._plane.predict(
            "segmentation",
            request.model.name,
            request.model.version,
            image_source(request.image),
            options,
            deadline_of(context),
            origin=ORIGIN,
            shed=True,
        )
        rle = request.mask_encoding == pb.MASK_ENCODING_RLE
        wire = WireOptions(
            overlay=request.include_overlay,
            mask_encoding="rle" if rle else "png",
            heat_overlays=_wants_heat_overlays(request),
        )
        encoded = await self._encoded(prediction, wire)
        return pb.SegmentResponse(
            model_name=prediction.model,
            model_version=prediction.version,
            image_size=pb.ImageSize(width=prediction.image.width, height=prediction.image.height),
            masks=_masks(prediction, encoded),
            timings=_timings(prediction),
            overlay_png=encoded.overlay_png,
            heatmaps=_heatmaps(prediction, encoded),
            explain_method=prediction.explain_method,
            image_score=prediction.result.image_score,
        )

    async def ListModels(self, request, context) -> pb.ListModelsResponse:  # noqa: N802
        """Every model with its versions and states."""
        return pb.ListModelsResponse(models=[_model_summary(s) for s in self._plane.list_models()])

    async def GetModelMetadata(self, request, context) -> pb.ModelMetadata:  # noqa: N802
        """Task, labels, input spec and runtime of a model version."""
        info = self._plane.model_info(request.model.name, request.model.version)
        config = info.config
        spec = config.input
        return pb.ModelMetadata(
            name=info.name,
            version=info.version,
            task=config.task,
            labels=config.labels,
            input=pb.InputSpec(
                name=spec.name,
                layout=spec.layout,
                height=spec.height,
                width=spec.width,
                channels=spec.channels,
                dtype=spec.dtype,
            ),
            providers=list(info.providers),
            max_batch_size=config.batching.max_batch_size,
            description=config.description,
            explainable=info.explainable,
        )

    async def Explain(self, request: pb.ExplainRequest, context) -> pb.ExplainResponse:  # noqa: N802
        """A Grad-CAM heat map per finding."""
        options = PredictOptions(score_threshold=_threshold(request, "score_threshold"))
        prediction = await self._plane.explain(
            request.model.name,
            request.model.version,
            image_source(request.image),
            list(request.class_ids),
            options,
            deadline_of(context),
            origin=ORIGIN,
            shed=True,
        )
        encoded = await self._encoded(
            prediction, WireOptions(heat_overlays=request.include_overlay)
        )
        response = pb.ExplainResponse(
            model_name=prediction.model,
            model_version=prediction.version,
            image_size=pb.ImageSize(width=prediction.image.width, height=prediction.image.height),
            method=prediction.explain_method,
            timings=_timings(prediction),
        )
        if isinstance(prediction.result, DetectionResult):
            response.detections.extend(_detection_message(d) for d in prediction.result.detections)
        else:
            response.masks.extend(_masks(prediction, encoded))
            if prediction.result.image_score is not None:
                response.image_score = prediction.result.image_score
        response.heatmaps.extend(_heatmaps(prediction, encoded))
        return response


def _masks(prediction: Prediction, encoded: EncodedPrediction) -> list[pb.Mask]:
    spacing = prediction.image.pixel_spacing_mm
    return [
        _mask_message(mask, data, spacing)
        for mask, data in zip(prediction.result.masks, encoded.masks, strict=True)
    ]
