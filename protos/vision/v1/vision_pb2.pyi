from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_TYPE_UNSPECIFIED: _ClassVar[PixelType]
    PIXEL_TYPE_UINT8: _ClassVar[PixelType]
    PIXEL_TYPE_UINT16: _ClassVar[PixelType]
    PIXEL_TYPE_FLOAT32: _ClassVar[PixelType]
    PIXEL_TYPE_INT16: _ClassVar[PixelType]

class MaskEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MASK_ENCODING_UNSPECIFIED: _ClassVar[MaskEncoding]
    MASK_ENCODING_PNG: _ClassVar[MaskEncoding]
    MASK_ENCODING_RLE: _ClassVar[MaskEncoding]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_UNAVAILABLE: _ClassVar[ModelState]

class StreamPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_POLICY_UNSPECIFIED: _ClassVar[StreamPolicy]
    STREAM_POLICY_EVERY: _ClassVar[StreamPolicy]
    STREAM_POLICY_LATEST: _ClassVar[StreamPolicy]

class VerdictStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_STATUS_UNSPECIFIED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_PASS: _ClassVar[VerdictStatus]
    VERDICT_STATUS_FAIL: _ClassVar[VerdictStatus]
    VERDICT_STATUS_DROPPED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_ERROR: _ClassVar[VerdictStatus]
PIXEL_TYPE_UNSPECIFIED: PixelType
PIXEL_TYPE_UINT8: PixelType
PIXEL_TYPE_UINT16: PixelType
PIXEL_TYPE_FLOAT32: PixelType
PIXEL_TYPE_INT16: PixelType
MASK_ENCODING_UNSPECIFIED: MaskEncoding
MASK_ENCODING_PNG: MaskEncoding
MASK_ENCODING_RLE: MaskEncoding
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_UNAVAILABLE: ModelState
STREAM_POLICY_UNSPECIFIED: StreamPolicy
STREAM_POLICY_EVERY: StreamPolicy
STREAM_POLICY_LATEST: StreamPolicy
VERDICT_STATUS_UNSPECIFIED: VerdictStatus
VERDICT_STATUS_PASS: VerdictStatus
VERDICT_STATUS_FAIL: VerdictStatus
VERDICT_STATUS_DROPPED: VerdictStatus
VERDICT_STATUS_ERROR: VerdictStatus

class RawImage(_message.Message):
    __slots__ = ("data", "shape", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: PixelType
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[PixelType, str]] = ...) -> None: ...

class ImageInput(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ImageSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "preprocess_ms", "queue_ms", "inference_ms", "postprocess_ms", "total_ms", "explain_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    preprocess_ms: float
    queue_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    explain_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., explain_ms: _Optional[float] = ...) -> None: ...

class ExplainOptions(_message.Message):
    __slots__ = ("class_ids", "include_overlay", "max_findings")
    CLASS_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    MAX_FINDINGS_FIELD_NUMBER: _ClassVar[int]
    class_ids: _containers.RepeatedScalarFieldContainer[int]
    include_overlay: bool
    max_findings: int
    def __init__(self, class_ids: _Optional[_Iterable[int]] = ..., include_overlay: _Optional[bool] = ..., max_findings: _Optional[int] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("model", "image", "score_threshold", "iou_threshold", "include_overlay", "explain")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    image: ImageInput
    score_threshold: float
    iou_threshold: float
    include_overlay: bool
    explain: ExplainOptions
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., score_threshold: _Optional[float] = ..., iou_threshold: _Optional[float] = ..., include_overlay: _Optional[bool] = ..., explain: _Optional[_Union[ExplainOptions, _Mapping]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("box", "score", "class_id", "label")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    box: Box
    score: float
    class_id: int
    label: str
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., score: _Optional[float] = ..., class_id: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "image_size", "detections", "timings", "overlay_png", "heatmaps", "explain_method")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    HEATMAPS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_METHOD_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    image_size: ImageSize
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    timings: Timings
    overlay_png: bytes
    heatmaps: _containers.RepeatedCompositeFieldContainer[Heatmap]
    explain_method: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., image_size: _Optional[_Union[ImageSize, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., heatmaps: _Optional[_Iterable[_Union[Heatmap, _Mapping]]] = ..., explain_method: _Optional[str] = ...) -> None: ...

class RunLengthMask(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("class_id", "label", "score", "pixel_area", "physical_area_mm2", "png", "rle")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_AREA_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_AREA_MM2_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    RLE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    pixel_area: int
    physical_area_mm2: float
    png: bytes
    rle: RunLengthMask
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., pixel_area: _Optional[int] = ..., physical_area_mm2: _Optional[float] = ..., png: _Optional[bytes] = ..., rle: _Optional[_Union[RunLengthMask, _Mapping]] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("model", "image", "mask_encoding", "include_overlay", "explain")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_ENCODING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    image: ImageInput
    mask_encoding: MaskEncoding
    include_overlay: bool
    explain: ExplainOptions
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., mask_encoding: _Optional[_Union[MaskEncoding, str]] = ..., include_overlay: _Optional[bool] = ..., explain: _Optional[_Union[ExplainOptions, _Mapping]] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "image_size", "masks", "timings", "overlay_png", "heatmaps", "explain_method", "image_score")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    HEATMAPS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_METHOD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SCORE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    image_size: ImageSize
    masks: _containers.RepeatedCompositeFieldContainer[Mask]
    timings: Timings
    overlay_png: bytes
    heatmaps: _containers.RepeatedCompositeFieldContainer[Heatmap]
    explain_method: str
    image_score: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., image_size: _Optional[_Union[ImageSize, _Mapping]] = ..., masks: _Optional[_Iterable[_Union[Mask, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., heatmaps: _Optional[_Iterable[_Union[Heatmap, _Mapping]]] = ..., explain_method: _Optional[str] = ..., image_score: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelVersionStatus(_message.Message):
    __slots__ = ("version", "state", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: ModelState
    reason: str
    def __init__(self, version: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "task", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersionStatus]
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[ModelVersionStatus, _Mapping]]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "image", "class_ids", "include_overlay", "score_threshold")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CLASS_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    image: ImageInput
    class_ids: _containers.RepeatedScalarFieldContainer[int]
    include_overlay: bool
    score_threshold: float
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., class_ids: _Optional[_Iterable[int]] = ..., include_overlay: _Optional[bool] = ..., score_threshold: _Optional[float] = ...) -> None: ...

class Heatmap(_message.Message):
    __slots__ = ("class_id", "label", "detection", "width", "height", "data", "overlay_png")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    detection: Detection
    width: int
    height: int
    data: bytes
    overlay_png: bytes
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., detection: _Optional[_Union[Detection, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ..., overlay_png: _Optional[bytes] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "image_size", "detections", "masks", "heatmaps", "method", "timings", "image_score")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    HEATMAPS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SCORE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    image_size: ImageSize
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    masks: _containers.RepeatedCompositeFieldContainer[Mask]
    heatmaps: _containers.RepeatedCompositeFieldContainer[Heatmap]
    method: str
    timings: Timings
    image_score: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., image_size: _Optional[_Union[ImageSize, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., masks: _Optional[_Iterable[_Union[Mask, _Mapping]]] = ..., heatmaps: _Optional[_Iterable[_Union[Heatmap, _Mapping]]] = ..., method: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., image_score: _Optional[float] = ...) -> None: ...

class GetModelMetadataRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ...) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("name", "layout", "height", "width", "channels", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    layout: str
    height: int
    width: int
    channels: int
    dtype: str
    def __init__(self, name: _Optional[str] = ..., layout: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., dtype: _Optional[str] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("name", "version", "task", "labels", "input", "providers", "max_batch_size", "description", "explainable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPLAINABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    task: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    input: InputSpec
    providers: _containers.RepeatedScalarFieldContainer[str]
    max_batch_size: int
    description: str
    explainable: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., task: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., input: _Optional[_Union[InputSpec, _Mapping]] = ..., providers: _Optional[_Iterable[str]] = ..., max_batch_size: _Optional[int] = ..., description: _Optional[str] = ..., explainable: _Optional[bool] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("model", "camera_id", "policy", "max_in_flight", "stale_after_ms", "mask_encoding")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    STALE_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    MASK_ENCODING_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    camera_id: str
    policy: StreamPolicy
    max_in_flight: int
    stale_after_ms: int
    mask_encoding: MaskEncoding
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., camera_id: _Optional[str] = ..., policy: _Optional[_Union[StreamPolicy, str]] = ..., max_in_flight: _Optional[int] = ..., stale_after_ms: _Optional[int] = ..., mask_encoding: _Optional[_Union[MaskEncoding, str]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("sequence", "capture_time_unix_ns", "image")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    capture_time_unix_ns: int
    image: ImageInput
    def __init__(self, sequence: _Optional[int] = ..., capture_time_unix_ns: _Optional[int] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    frame: Frame
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class RuleHit(_message.Message):
    __slots__ = ("rule", "label", "score", "pixel_area")
    RULE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_AREA_FIELD_NUMBER: _ClassVar[int]
    rule: str
    label: str
    score: float
    pixel_area: int
    def __init__(self, rule: _Optional[str] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., pixel_area: _Optional[int] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("camera_id", "sequence", "status", "hits", "detections", "masks", "image_score", "model_name", "model_version", "server_latency_ms", "frame_age_ms", "error", "timings")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FRAME_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    sequence: int
    status: VerdictStatus
    hits: _containers.RepeatedCompositeFieldContainer[RuleHit]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    masks: _containers.RepeatedCompositeFieldContainer[Mask]
    image_score: float
    model_name: str
    model_version: str
    server_latency_ms: float
    frame_age_ms: float
    error: FrameError
    timings: Timings
    def __init__(self, camera_id: _Optional[str] = ..., sequence: _Optional[int] = ..., status: _Optional[_Union[VerdictStatus, str]] = ..., hits: _Optional[_Iterable[_Union[RuleHit, _Mapping]]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., masks: _Optional[_Iterable[_Union[Mask, _Mapping]]] = ..., image_score: _Optional[float] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., server_latency_ms: _Optional[float] = ..., frame_age_ms: _Optional[float] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class RawVolume(_message.Message):
    __slots__ = ("data", "shape", "dtype", "spacing_mm", "origin_mm", "direction")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SPACING_MM_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_MM_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: PixelType
    spacing_mm: _containers.RepeatedScalarFieldContainer[float]
    origin_mm: _containers.RepeatedScalarFieldContainer[float]
    direction: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[PixelType, str]] = ..., spacing_mm: _Optional[_Iterable[float]] = ..., origin_mm: _Optional[_Iterable[float]] = ..., direction: _Optional[_Iterable[float]] = ...) -> None: ...

class DicomSeries(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, instances: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SegmentVolumeRequest(_message.Message):
    __slots__ = ("model", "series", "volume")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    series: DicomSeries
    volume: RawVolume
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., series: _Optional[_Union[DicomSeries, _Mapping]] = ..., volume: _Optional[_Union[RawVolume, _Mapping]] = ...) -> None: ...

class VolumeMask(_message.Message):
    __slots__ = ("class_id", "label", "score", "voxel_count", "volume_mm3", "rle", "slices")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VOXEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MM3_FIELD_NUMBER: _ClassVar[int]
    RLE_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    voxel_count: int
    volume_mm3: float
    rle: RunLengthMask
    slices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., voxel_count: _Optional[int] = ..., volume_mm3: _Optional[float] = ..., rle: _Optional[_Union[RunLengthMask, _Mapping]] = ..., slices: _Optional[_Iterable[int]] = ...) -> None: ...

class SegmentVolumeResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "shape", "spacing_mm", "masks", "timings", "windows")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SPACING_MM_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    spacing_mm: _containers.RepeatedScalarFieldContainer[float]
    masks: _containers.RepeatedCompositeFieldContainer[VolumeMask]
    timings: Timings
    windows: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., spacing_mm: _Optional[_Iterable[float]] = ..., masks: _Optional[_Iterable[_Union[VolumeMask, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., windows: _Optional[int] = ...) -> None: ...
