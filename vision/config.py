"""A model's config file (`config.yaml` in its repository folder): the one schema every part reads.

Example::

    name: retina-vessels
    task: segmentation            # detection | segmentation | volumetric_segmentation
    labels: [background, vessel]
    input:   {name: images, layout: NCHW, height: 512, width: 512, channels: 3, dtype: float32}
    preprocess:
      resize: stretch             # stretch | letterbox | none
      scale: 0.00392156862745098  # multiply pixel values (after windowing, as float)
      mean: [0.0, 0.0, 0.0]       # subtracted after scaling
      std: [1.0, 1.0, 1.0]
      channel_order: RGB          # RGB | BGR | GRAY
    postprocess:
      type: argmax                # argmax | sigmoid | yolov8
      output: logits              # output name; first output when absent
      score_threshold: 0.25
      iou_threshold: 0.45
      mask_threshold: 0.5
      max_regions: 0              # segmentation: keep the N strongest regions per class (0: all)
      image_score_output: ""      # segmentation: an output with one score per image (optional)
      image_score_gate: 0.5       # ... and no mask is served below that image score (0: off)
      gate_uses_mask_score: false # ... true: below the mean of it and the served mask's score
    batching: {max_batch_size: 8, max_queue_delay_ms: 0, max_queue_size: 64}
    version_policy: {latest: 1}   # or {all: true} or {specific: [1, 3]}
    runtime: {providers: auto, intra_op_threads: 0, inter_op_threads: 0}
    explain: {file: model.explain.onnx, method: gradcam, target_layer: model.1.submodule}
    volume:                       # task volumetric_segmentation only (input.layout NCDHW)
      spacing_mm: [1.0, 1.0, 1.0] # z, y, x: the grid the model was trained on
      patch: [32, 48, 32]         # z, y, x voxels: the model's input
      overlap: 0.5                # sliding windows, blended as MONAI does
      blend: gaussian             # gaussian | constant
      normalisation: zscore_nonzero  # zscore | zscore_nonzero | window | none
    inspection:                   # pass/fail of a frame (`vision.inspection`); absent: any finding
      rules:                      # a frame FAILS when any rule fires
        - name: defect            # required, unique
          classes: [open, short]  # labels; empty/absent: every class
          min_score: 0.5          # default: postprocess.score_threshold
          min_area_px: 0          # segmentation: mask pixels inside the ROI; detection: box area
          roi: [0, 0, 640, 480]   # x1, y1, x2, y2 in pixels of the image sent; absent: whole image
        - name: image-score
          image_score: 0.7        # segmentation with image_score_output: fires at >= this
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vision.errors import ConfigError

CONFIG_FILENAME = "config.yaml"
# libyaml's safe loader when PyYAML has it (ten times faster, the same documents), else PyYAML's
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TASKS = ("detection", "segmentation", "volumetric_segmentation")
RESIZE_MODES = ("stretch", "letterbox", "none")
CHANNEL_ORDERS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NCHW", "NHWC", "NCDHW")
NORMALISATIONS = ("zscore", "zscore_nonzero", "window", "none")
BLEND_MODES = ("gaussian", "constant")
POSTPROCESS_TYPES = ("argmax", "sigmoid", "yolov8")
PROVIDER_NAMES = ("auto", "tensorrt", "cuda", "cpu")
EXPLAIN_METHODS = ("gradcam", "gradcam++", "hirescam")


@dataclass(frozen=True)
class InputSpec:
    """The model's image input. `height`/`width` of 0 mean dynamic (the image's own size)."""

    name: str = "images"
    layout: str = "NCHW"
    height: int = 0
    width: int = 0
    channels: int = 3
    dtype: str = "float32"
    size_divisor: int = 32  # dynamic sizes are padded up to a multiple of this


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes the model's input tensor."""

    resize: str = "stretch"
    pad_value: float = 114.0
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    dicom_window: bool = True  # apply VOI window / rescale for DICOM input


@dataclass(frozen=True)
class PostprocessSpec:
    """How raw outputs become boxes or masks."""

    type: str = "argmax"
    output: str = ""
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 300
    class_agnostic_nms: bool = False
    mask_threshold: float = 0.5
    background_class: int = 0  # argmax: class id that is not reported as a mask (-1: none)
    max_regions: int = 0  # segmentation: per class, keep the N regions of highest mean prob
    image_score_output: str = ""  # segmentation: an output with one probability per image
    # segmentation with image_score_output: no mask is served when the image score is below
    # this ("no defect"); 0 serves the masks whatever the image score
    image_score_gate: float = 0.5
    # true: the gate compares the mean of the image score and the best served mask's score (its
    # mean probability; 0 without a mask), so a confident mask can outvote a hesitant head
    gate_uses_mask_score: bool = False


@dataclass(frozen=True)
class BatchingSpec:
    """Dynamic batching. `max_batch_size` 0 or 1 disables batching.

    With `max_queue_delay_ms` 0 (the default) a batch takes whatever queued up while the
    previous batch ran, adding no latency at low load; a delay > 0 waits for fuller batches.
    """

    max_batch_size: int = 8
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 128
    inline_max_ms: float = 0.0
    """A lone request of a shape whose last run took at most this many ms runs on the event
    loop's thread, saving the hop to the inference thread (about 0.2 ms for a tiny model).
    0 (the default) never does: a model that stalls would then stall every request."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions (integer sub-folders) are served."""

    latest: int = 1
    all: bool = False
    specific: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of `available`."""
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific:
            return [v for v in ordered if v in self.specific]
        return ordered[-self.latest :] if self.latest > 0 else []


@dataclass(frozen=True)
class RuntimeSpec:
    """ONNX Runtime session options."""

    providers: tuple[str, ...] = ("auto",)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = False  # True: lower latency on cores nothing else uses
    tensorrt_fp16: bool = True
    tensorrt_cache_dir: str = ""  # default: <model dir>/.trt-cache
    warmup: bool = True


@dataclass(frozen=True)
class ExplainSpec:
    """The Grad-CAM explain graph exported beside the model (`vision.xai`); empty file: none."""

    file: str = ""  # e.g. model.explain.onnx in each version folder
    method: str = "gradcam"  # gradcam | gradcam++ | hirescam
    target_layer: str = ""  # recorded for the model card; the graph already embeds it
    max_targets: int = 16  # findings explained per request at most
    # A detector's split explain graph keeps its ONNX Runtime memory arena between runs (the
    # size of the largest request so far: blood-cells +44 MiB after 16 boxes) rather than
    # handing it back after each (about 5.5 ms of 45 slower at 10 boxes: pages mapped again)
    keep_arena: bool = True


@dataclass(frozen=True)
class InspectionRuleSpec:
    """One pass/fail rule as written in the config (`vision.inspection.Rule` is its resolved form).

    A finding rule fires on a finding of one of `classes` (every class when empty) scoring at
    least `min_score` (None: the postprocess score threshold) with at least `min_area_px` pixels
    (segmentation: mask pixels inside `roi`; detection: box area, box centre inside `roi`). An
    image-score rule (`image_score` set) fires when the model's image-level score reaches it.
    """

    name: str
    classes: tuple[str, ...] = ()
    min_score: float | None = None
    min_area_px: int = 0
    roi: tuple[float, ...] | None = None  # x1, y1, x2, y2 in pixels of the image sent
    image_score: float | None = None


@dataclass(frozen=True)
class InspectionSpec:
    """The inspection rules of a model; no rules: the default rule, any finding fails the frame."""

    rules: tuple[InspectionRuleSpec, ...] = ()


@dataclass(frozen=True)
class VolumeSpec:
    """Volumetric models (task `volumetric_segmentation`): grid, intensities, sliding window.

    Volumes are resampled to `spacing_mm` (z, y, x: slice direction, rows, columns) before
    inference and the masks back to the original grid; `patch` (z, y, x voxels) is the model's
    input; windows overlap by `overlap` (fraction of the patch) and are blended as MONAI's
    `sliding_window_inference` does (`gaussian` with `sigma_scale`, or `constant`).
    """

    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch: tuple[int, int, int] = (32, 32, 32)
    overlap: float = 0.5
    blend: str = "gaussian"
    sigma_scale: float = 0.125
    # zscore: (v - mean) / std over the volume; zscore_nonzero: over voxels != 0 (MRI crops);
    # window: clip to [window_min, window_max] and scale to [0, 1] (CT); none: as stored.
    normalisation: str = "zscore_nonzero"
    window_min: float = 0.0
    window_max: float = 1.0
    # Masks smaller than this many voxels are not reported.
    min_voxels: int = 0
    # Test-time mirroring (nnU-Net's): besides the volume as it is, the model also sees it
    # flipped along each listed set of axes (0 = z / slices, 1 = y / rows, 2 = x / columns, e.g.
    # [[0], [1], [2]]); the passes' probabilities are flipped back and averaged. Empty: off.
    tta_flips: tuple[tuple[int, ...], ...] = ()
    # Canonical orientation before the model (axes permuted / flipped only, no interpolation;
    # masks mapped back to the source grid): where the column, row and slice axes point, e.g.
    # "RAS" or "LPS" (patient Left/Right, Posterior/Anterior, Superior/Inferior). "": as stored.
    orientation: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """Everything the server needs to know about one model, read from its `config.yaml`."""

    name: str
    task: str
    labels: tuple[str, ...]
    input: InputSpec = field(default_factory=InputSpec)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    batching: BatchingSpec = field(default_factory=BatchingSpec)
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    explain: ExplainSpec = field(default_factory=ExplainSpec)
    inspection: InspectionSpec = field(default_factory=InspectionSpec)
    volume: VolumeSpec = field(default_factory=VolumeSpec)
    model_file: str = "model.onnx"
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/JSON (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _section(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys with a clear message."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = {}
    for key, raw in data.items():
        values[key] = tuple(raw) if isinstance(raw, list) else raw
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")


def parse_config(data: dict[str, Any], where: str = "config") -> ModelConfig:
    """Validate a config mapping and build a ModelConfig."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    runtime = data.get("runtime") or {}
    if isinstance(runtime, dict) and isinstance(runtime.get("providers"), str):
        runtime = {**runtime, "providers": [runtime["providers"]]}
    policy = data.get("version_policy") or {}
    sections = {
        "input": _section(InputSpec, data.pop("input", None), f"{where}.input"),
        "preprocess": _section(PreprocessSpec, data.pop("preprocess", None), f"{where}.preprocess"),
        "postprocess": _section(
            PostprocessSpec, data.pop("postprocess", None), f"{where}.postprocess"
        ),
        "batching": _section(BatchingSpec, data.pop("batching", None), f"{where}.batching"),
        "version_policy": _section(VersionPolicy, policy, f"{where}.version_policy"),
        "runtime": _section(RuntimeSpec, runtime, f"{where}.runtime"),
        "explain": _section(ExplainSpec, data.pop("explain", None), f"{where}.explain"),
        "inspection": _inspection(data.pop("inspection", None), f"{where}.inspection"),
        "volume": _section(VolumeSpec, _volume_data(data.pop("volume", None)), f"{where}.volume"),
    }
    data.pop("version_policy", None)
    data.pop("runtime", None)
    for required in ("name", "task", "labels"):
        if required not in data:
            raise ConfigError(f"{where}: missing required key {required!r}")
    labels = data.pop("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"{where}.labels: expected a non-empty list of strings")
    config = _section(ModelConfig, {**data, "labels": labels, **sections}, where)
    _validate(config, where)
    return config


def _inspection(data: Any, where: str) -> InspectionSpec:
    """Build the inspection section: a mapping with a list of rule mappings."""
    if data is None:
        return InspectionSpec()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with 'rules', got {type(data).__name__}")
    unknown = sorted(set(data) - {"rules"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: ['rules']")
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        raise ConfigError(f"{where}.rules: expected a list of rules, got {type(rules).__name__}")
    return InspectionSpec(
        rules=tuple(
            _section(InspectionRuleSpec, rule, f"{where}.rules[{i}]")
            for i, rule in enumerate(rules)
        )
    )


def _validate_inspection(config: ModelConfig, where: str) -> None:
    """Rules name known labels, have unique names and sane thresholds and regions."""
    seen: set[str] = set()
    for i, rule in enumerate(config.inspection.rules):
        at = f"{where}.inspection.rules[{i}]"
        if not isinstance(rule.name, str) or not rule.name:
            raise ConfigError(f"{at}.name: every rule needs a non-empty name")
        if rule.name in seen:
            raise ConfigError(f"{at}.name: {rule.name!r} is used twice; rule names are unique")
        seen.add(rule.name)
        unknown = sorted(set(rule.classes) - set(config.labels))
        if unknown:
            raise ConfigError(f"{at}.classes: {unknown} not in labels {list(config.labels)}")
        if rule.image_score is not None:
            _check_image_score_rule(config, rule, at)
        if rule.min_score is not None and not 0.0 <= rule.min_score <= 1.0:
            raise ConfigError(f"{at}.min_score: must be within [0, 1], got {rule.min_score}")
        if not isinstance(rule.min_area_px, int) or rule.min_area_px < 0:
            raise ConfigError(f"{at}.min_area_px: must be a whole number >= 0")
        if rule.roi is not None:
            _check_roi(rule.roi, f"{at}.roi")


def _check_image_score_rule(config: ModelConfig, rule: InspectionRuleSpec, at: str) -> None:
    if not config.postprocess.image_score_output:
        raise ConfigError(
            f"{at}.image_score: the model has no image-level score; set "
            "postprocess.image_score_output or use classes/min_score instead"
        )
    if rule.classes or rule.min_score is not None or rule.min_area_px or rule.roi is not None:
        raise ConfigError(
            f"{at}: an image_score rule takes no classes, min_score, min_area_px or roi; "
            "write a separate rule for findings"
        )
    if not 0.0 <= rule.image_score <= 1.0:  # type: ignore[operator]
        raise ConfigError(f"{at}.image_score: must be within [0, 1], got {rule.image_score}")


def _check_roi(roi: tuple[float, ...], at: str) -> None:
    if len(roi) != 4 or not all(isinstance(v, (int, float)) for v in roi):
        raise ConfigError(f"{at}: expected [x1, y1, x2, y2] in pixels, got {list(roi)}")
    x1, y1, x2, y2 = roi
    if min(roi) < 0 or x2 <= x1 or y2 <= y1:
        raise ConfigError(f"{at}: need 0 <= x1 < x2 and 0 <= y1 < y2, got {list(roi)}")


def _validate(config: ModelConfig, where: str) -> None:
    _check_choice(config.task, TASKS, f"{where}.task")
    _check_choice(config.input.layout, LAYOUTS, f"{where}.input.layout")
    _check_choice(config.preprocess.resize, RESIZE_MODES, f"{where}.preprocess.resize")
    _check_choice(
        config.preprocess.channel_order, CHANNEL_ORDERS, f"{where}.preprocess.channel_order"
    )
    _check_choice(config.postprocess.type, POSTPROCESS_TYPES, f"{where}.postprocess.type")
    for provider in config.runtime.providers:
        _check_choice(provider, PROVIDER_NAMES, f"{where}.runtime.providers")
    if config.input.channels not in (1, 3):
        raise ConfigError(f"{where}.input.channels: must be 1 or 3, got {config.input.channels}")
    if (config.input.channels == 1) != (config.preprocess.channel_order == "GRAY"):
        raise ConfigError(
            f"{where}: channel_order GRAY goes with input.channels 1, and only with it"
        )
    if config.task == "detection" and config.postprocess.type != "yolov8":
        raise ConfigError(f"{where}: detection models need postprocess.type yolov8")
    if config.task == "segmentation" and config.postprocess.type == "yolov8":
        raise ConfigError(f"{where}: segmentation models need postprocess.type argmax or sigmoid")
    _check_choice(config.explain.method, EXPLAIN_METHODS, f"{where}.explain.method")
    if config.batching.max_queue_size < 1:
        raise ConfigError(f"{where}.batching.max_queue_size: must be at least 1")
    if not 0.0 <= config.batching.inline_max_ms <= 5.0:
        raise ConfigError(
            f"{where}.batching.inline_max_ms: between 0 (off) and 5 ms, got "
            f"{config.batching.inline_max_ms}; only models that answer in about a millisecond gain"
        )
    gate = config.postprocess.image_score_gate
    if not (isinstance(gate, (int, float)) and 0.0 <= gate <= 1.0):
        raise ConfigError(f"{where}.postprocess.image_score_gate: must be within [0, 1] (0: off)")
    if not isinstance(config.postprocess.gate_uses_mask_score, bool):
        raise ConfigError(f"{where}.postprocess.gate_uses_mask_score: true or false")
    if not isinstance(config.explain.keep_arena, bool):
        raise ConfigError(f"{where}.explain.keep_arena: true or false")
    _validate_inspection(config, where)
    _validate_volume(config, where)


def _volume_data(data: Any) -> Any:
    """`volume.tta_flips` as a tuple of tuples (YAML gives lists of lists)."""
    if isinstance(data, dict) and isinstance(data.get("tta_flips"), list):
        flips = data["tta_flips"]
        return {**data, "tta_flips": tuple(tuple(f) if isinstance(f, list) else f for f in flips)}
    return data


def _validate_tta_and_orientation(v: VolumeSpec, at: str) -> None:
    for axes in v.tta_flips:
        if not isinstance(axes, tuple) or not axes or not set(axes) <= {0, 1, 2}:
            raise ConfigError(
                f"{at}.tta_flips: a list of axis lists from 0 (z), 1 (y), 2 (x), e.g. "
                f"[[0], [1], [2]]; got {list(v.tta_flips)}"
            )
    letters = v.orientation.upper()
    if letters and sorted(letters.translate(str.maketrans("RAI", "LPS"))) != ["L", "P", "S"]:
        raise ConfigError(
            f"{at}.orientation: three letters, one of L/R, P/A, S/I each (e.g. RAS, LPS), "
            f"or empty for the stored orientation; got {v.orientation!r}"
        )


def _validate_volume(config: ModelConfig, where: str) -> None:
    volumetric = config.task == "volumetric_segmentation"
    if volumetric != (config.input.layout == "NCDHW"):
        raise ConfigError(f"{where}: task volumetric_segmentation goes with input.layout NCDHW")
    if not volumetric:
        return
    v, at = config.volume, f"{where}.volume"
    _check_choice(v.normalisation, NORMALISATIONS, f"{at}.normalisation")
    _check_choice(v.blend, BLEND_MODES, f"{at}.blend")
    if len(v.spacing_mm) != 3 or min(v.spacing_mm) <= 0:
        raise ConfigError(f"{at}.spacing_mm: three positive numbers (z, y, x), got {v.spacing_mm}")
    if len(v.patch) != 3 or min(v.patch) < 1:
        raise ConfigError(f"{at}.patch: three positive voxel counts (z, y, x), got {v.patch}")
    if not 0.0 <= v.overlap < 1.0:
        raise ConfigError(f"{at}.overlap: a fraction of the patch in [0, 1), got {v.overlap}")
    if v.normalisation == "window" and v.window_max <= v.window_min:
        raise ConfigError(f"{at}: window_max must be above window_min")
    _validate_tta_and_orientation(v, at)
    if config.postprocess.type == "yolov8":
        raise ConfigError(f"{where}: volumetric models need postprocess.type argmax or sigmoid")


def load_config(model_dir: str | Path) -> ModelConfig:
    """Read and validate `<model_dir>/config.yaml`."""
    path = Path(model_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise ConfigError(f"{path}: no config file")
    try:
        data = yaml.load(path.read_text(), Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(data, where=str(path))


def write_config(config: ModelConfig, model_dir: str | Path) -> Path:
    """Write `config` as `<model_dir>/config.yaml`, every key spelled out in a new file.

    Over an existing file, the keys it has are written with their new values and a key it
    lacks only when its new value is not the default, so that rewriting one setting (a gate, an
    explain graph) changes that line rather than adding every default section (`volume:` to a
    2D model). Either way the file loads back as `config`."""
    path = Path(model_dir) / CONFIG_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config.to_dict()
    existing = _existing_yaml(path)
    if existing is not None:
        data = _sparse(data, existing, _defaults(ModelConfig))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _existing_yaml(path: Path) -> dict | None:
    """The mapping in the YAML file at `path`; None when there is none (no file, not YAML)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return raw if isinstance(raw, dict) else None


def _defaults(cls: type) -> dict[str, Any]:
    """The plain default of each field of dataclass `cls` that has one."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = _plain(
                dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            )
    return out


def _sparse(new: dict, existing: dict, defaults: dict) -> dict:
    """`new` less the keys that `existing` lacks and whose value is their default."""
    out = {}
    for key, value in new.items():
        default = defaults.get(key, dataclasses.MISSING)
        if isinstance(value, dict) and isinstance(default, dict):
            inner = existing.get(key) if isinstance(existing.get(key), dict) else {}
            kept = _sparse(value, inner, default)
            if kept or key in existing:
                out[key] = kept
        elif key in existing or value != default:
            out[key] = value
    return out
