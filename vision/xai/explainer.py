"""Running a model's explain graph (torch-free): targets in, heat maps in original coordinates out.

The explain graph (`vision.xai.explain_graph`) takes `images`, `target_class` [N] and either
`target_mask` [N,1,H,W] (segmentation: sum of the class logits inside the mask; all ones here,
the whole image) or `target_anchor` [N] (detection: the class score of one output row), and
returns the model's outputs plus raw CAMs `cam` [N,h,w]. One image with N targets is one graph
run of batch N.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
import threading
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from vision.config import ModelConfig
from vision.errors import InvalidInputError
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.types import Detection, DetectionResult, PreprocessMeta, SegmentationResult
from vision.xai.cam import heatmap
from vision.xai.split_graph import SplitGraph, agree, open_split

log = logging.getLogger(__name__)


@dataclass
class Explanation:
    """One heat map [H, W] float32 in [0, 1] over the original image, and what it explains."""

    class_id: int
    label: str
    heat: np.ndarray
    detection: Detection | None = None


class Explainer:
    """Runs one model version's explain graph for a preprocessed image.

    Given the plain model (`plain`), a detector whose split graph serves every path
    (`forward_once` checked now) lets its whole graph's session go: `explain_detections` then
    runs the split parts too, and `session` loads the whole graph again only if asked for.
    """

    def __init__(
        self, config: ModelConfig, session: OnnxModel, plain: OnnxModel | None = None
    ) -> None:
        self.config = config
        self._whole: OnnxModel | None = session
        self._whole_lock = threading.Lock()
        self.path, self.spec, self.inputs = session.path, session.spec, session.inputs
        self.pipeline = Pipeline(config)
        # Set by `check_outputs`: the graph's model outputs equal the plain model's bit for bit.
        self.same_outputs = False
        # A static image batch of 1: one forward pass shared by K targets (`shared_graph`);
        # otherwise the image is repeated once per target.
        self.shared_forward = bool(session.inputs) and session.inputs[0].shape[:1] == (1,)
        # A detector's shared graph cut in two (`vision.xai.split_graph`), checked against the
        # whole graph here; usable in place of the plain run once `forward_once` has also
        # found its outputs equal to the plain model's.
        self.split = self._open_split() if config.task == "detection" else None
        self._split_checked: bool | None = None
        self._split_lock = threading.Lock()
        if plain is not None and self.forward_once(plain):
            self._whole = None  # the split serves Explain and explain_detections alike
            release_freed_memory()

    @property
    def session(self) -> OnnxModel:
        """The whole explain graph's session; loaded again (once) when it was let go."""
        with self._whole_lock:
            if self._whole is None:
                self._whole = OnnxModel(self.path, self.spec)
            return self._whole

    @property
    def whole_loaded(self) -> bool:
        """Whether the whole graph's session is in memory (False once the split serves)."""
        return self._whole is not None

    def _open_split(self) -> SplitGraph | None:
        if not self.shared_forward or self.session.providers != ["CPUExecutionProvider"]:
            return None
        try:
            keep = self.config.explain.keep_arena
            return open_split(self.session.path, self.session.spec, self.session, keep)
        except Exception as exc:  # noqa: BLE001 - the whole graph still serves; say why not split
            log.warning(
                "explain graph %s not split (%s: %s)",
                self.session.path.name,
                type(exc).__name__,
                exc,
            )
            return None

    def forward_once(self, plain: OnnxModel) -> bool:
        """Whether `detect_and_explain` may stand in for `plain`'s run plus `explain_detections`:
        the graph is split and its forward part gives `plain`'s outputs on a fixed random image
        (`split_graph.agree`: to 1e-4 of the largest value; equal bit for bit for the bundled
        detectors on one thread), checked on the first call, then remembered."""
        if self.split is None:
            return False
        with self._split_lock:
            if self._split_checked is None:
                self._split_checked = self._same_as(plain)
        return self._split_checked

    def _same_as(self, plain: OnnxModel) -> bool:
        spec = self.inputs[0]
        image = np.random.default_rng(1).random(spec.shape, dtype=np.float32)
        want = plain.run({spec.name: image})
        got, _ = self.split.forward(image)
        return set(want) <= set(got) and all(agree(got[k], v) for k, v in want.items())

    def detect_and_explain(
        self,
        tensor: np.ndarray,
        meta: PreprocessMeta,
        pipeline: Pipeline,
        class_ids=(),
        max_findings: int = 0,
    ) -> tuple[DetectionResult, list[Explanation]]:
        """Detections and a heat map per detection from one forward and one backward pass of
        the split graph (`forward_once` must hold): the forward part's outputs postprocessed by
        `pipeline` give the boxes, the backward part their CAMs."""
        outputs, state = self.split.forward(tensor[np.newaxis])
        result = pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
        found = self._targets(result, class_ids, max_findings)
        if not found:
            return result, []
        classes = np.array([d.class_id for d in found], dtype=np.int64)
        anchors = np.array([d.anchor for d in found], dtype=np.int64)
        cams = self.split.cams(state, classes, anchors)
        return result, self._explained(found, cams, meta)

    def check_outputs(self, plain: OnnxModel) -> bool:
        """Compare the graph's model outputs with `plain`'s on a fixed random image.

        Segmentation graphs only (a detector's explain targets come from the plain outputs
        anyway): batch 1 and 2 (two targets) must give bit-identical outputs to `plain` on
        batch 1. Then one explain-graph run can serve masks and heat maps together
        (`yields_predictions`). Different kernels, fusions or precision (say, a TensorRT FP16
        plain model) make them differ, and the caller runs both. Also warms the graph up;
        what those runs freed goes back to the system (`release_freed_memory`).
        """
        self.same_outputs = False
        if self.config.task != "segmentation":
            return False
        try:
            self.same_outputs = self._same_as_plain(plain)
        finally:
            release_freed_memory()
        return self.same_outputs

    def _same_as_plain(self, plain: OnnxModel) -> bool:
        spec = self.config.input
        height, width = spec.height or 64, spec.width or 64
        image = np.random.default_rng(0).standard_normal((spec.channels, height, width))
        image = image.astype(np.float32)
        want = plain.run({spec.name: image[np.newaxis]})
        classes = [len(self.config.labels) - 1]
        for n in (1, 2):
            got = self._run_classes(image, classes * n)
            for name, value in want.items():
                if name not in got or not all(np.array_equal(row, value[0]) for row in got[name]):
                    return False
        return True

    def yields_predictions(self, class_ids) -> bool:
        """Whether one explain-graph run should give both the masks and the heat maps.

        Only when its outputs are the plain model's (`check_outputs`) and the classes to
        explain are known before the masks: given, or the model's only foreground class.
        """
        return self.same_outputs and (bool(class_ids) or len(self._foreground()) == 1)

    def _foreground(self) -> list[int]:
        background = self.config.postprocess.background_class
        return [c for c in range(len(self.config.labels)) if c != background]

    def limit(self, max_findings: int = 0) -> int:
        """Heat maps per request at most: `max_findings` (0: none asked), capped by the config."""
        if max_findings < 0:
            raise InvalidInputError(f"max_findings must be >= 0, got {max_findings}")
        cap = self.config.explain.max_targets
        return min(max_findings, cap) if max_findings else cap

    def check_classes(self, class_ids) -> list[int]:
        """`class_ids` as a list; InvalidInputError when one is not a class of the model."""
        labels = self.config.labels
        bad = [c for c in class_ids if not 0 <= c < len(labels)]
        if bad:
            raise InvalidInputError(f"class ids {bad} out of range; the model has {len(labels)}")
        return list(class_ids)

    def explain_detections(
        self,
        tensor: np.ndarray,
        meta: PreprocessMeta,
        result: DetectionResult,
        class_ids=(),
        max_findings: int = 0,
    ) -> list[Explanation]:
        """One heat map per detection, highest scores first, in one graph run (one forward
        pass for all of them when the graph is a shared-forward one).

        At most `limit(max_findings)`; only detections of `class_ids` when any are given.
        """
        found = self._targets(result, class_ids, max_findings)
        if not found:
            return []
        classes = np.array([d.class_id for d in found], dtype=np.int64)
        anchors = np.array([d.anchor for d in found], dtype=np.int64)
        if not self.whole_loaded:  # let go for the split: its two parts give the same CAMs
            _, state = self.split.forward(tensor[np.newaxis])
            return self._explained(found, self.split.cams(state, classes, anchors), meta)
        images = tensor[np.newaxis]
        if not self.shared_forward:
            images = np.repeat(images, len(found), axis=0)
        feeds = {"images": images, "target_class": classes, "target_anchor": anchors}
        return self._explained(found, self.session.run(feeds)["cam"], meta)

    def _targets(self, result: DetectionResult, class_ids, max_findings: int) -> list[Detection]:
        """The detections to explain: of `class_ids` (all when empty), highest scores first, at
        most `limit(max_findings)`; InvalidInputError when one carries no output row."""
        wanted = set(self.check_classes(class_ids))
        found = sorted(
            (d for d in result.detections if not wanted or d.class_id in wanted),
            key=lambda d: -d.score,
        )[: self.limit(max_findings)]
        if any(d.anchor < 0 for d in found):
            raise InvalidInputError("detections carry no output row index; cannot explain them")
        return found

    @staticmethod
    def _explained(found: list[Detection], cams: np.ndarray, meta) -> list[Explanation]:
        return [
            Explanation(d.class_id, d.label, heatmap(cam, meta), d)
            for d, cam in zip(found, cams, strict=True)
        ]

    def explain_segmentation(
        self, tensor: np.ndarray, meta: PreprocessMeta, class_ids: list[int]
    ) -> tuple[SegmentationResult, list[Explanation]]:
        """Masks and one heat map per class: `class_ids`, or every class found in the image."""
        labels = self.config.labels
        wanted = self.check_classes(class_ids) or self._foreground()
        outputs = self._run_classes(tensor, wanted)
        cams = outputs.pop("cam")
        result = self.pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
        if not class_ids:
            present = {m.class_id for m in result.masks}
            pairs = [(c, cam) for c, cam in zip(wanted, cams, strict=True) if c in present]
        else:
            pairs = list(zip(wanted, cams, strict=True))
        return result, [Explanation(c, labels[c], heatmap(cam, meta)) for c, cam in pairs]

    def explain_classes(
        self,
        tensor: np.ndarray,
        meta: PreprocessMeta,
        result: SegmentationResult,
        class_ids=(),
        max_findings: int = 0,
    ) -> list[Explanation]:
        """Heat maps for the masks of an already computed `result`, in one graph run.

        `class_ids`, found or not, or else every class in `result.masks`; ascending id when not
        given, cut to `limit(max_findings)`. The graph's own outputs are not used.
        """
        wanted = self.check_classes(class_ids) or sorted({m.class_id for m in result.masks})
        wanted = wanted[: self.limit(max_findings)]
        if not wanted:
            return []
        cams = self._run_classes(tensor, wanted)["cam"]
        labels = self.config.labels
        pairs = zip(wanted, cams, strict=True)
        return [Explanation(c, labels[c], heatmap(cam, meta)) for c, cam in pairs]

    def _run_classes(self, tensor: np.ndarray, class_ids: list[int]) -> dict[str, np.ndarray]:
        """One graph run of the image repeated per class, each targeting the whole image."""
        height, width = tensor.shape[-2:]
        n = len(class_ids)
        feeds = {
            "images": np.repeat(tensor[np.newaxis], n, axis=0),
            "target_class": np.array(class_ids, dtype=np.int64),
            "target_mask": np.ones((n, 1, height, width), dtype=np.float32),
        }
        return self.session.run(feeds)


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere
    nothing). A dropped ONNX Runtime session frees its weights and arena, but glibc keeps most
    of those pages: the whole blood-cells explain graph left 30 of its 39 MiB in RSS, 1 MiB
    after the trim."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def heat_to_float16_bytes(heat: np.ndarray) -> bytes:
    """Row-major little-endian float16, the wire format of vision.v1 Heatmap.data.

    Converted by ONNX Runtime's Cast (vectorised; the same round-to-nearest-even bits as
    numpy's ``astype``, which converts one value at a time and is slow on subnormal halves,
    common in a heat map's low end: 10 maps of 640x480 took 12-50 ms, the Cast 3 ms).
    """
    if np.asarray(heat).dtype != np.float32 or sys.byteorder != "little":
        return np.ascontiguousarray(heat, dtype="<f2").tobytes()  # one rounding, as before
    values = np.ascontiguousarray(heat)
    return _float16_cast().run(None, {"x": values})[0].tobytes()


# The one-node ONNX model `Cast(x: float32) -> y: float16` (opset 18), serialized: a server
# install has ONNX Runtime but not the `onnx` package that builds it
# (tests/xai/test_heat_encoding.py checks it equals the model `onnx.helper` makes).
FLOAT16_CAST_ONNX = (
    b'\x08\x0e:=\n\x17\n\x01x\x12\x01y"\x04Cast*\t\n\x02to\x18\n\xa0\x01\x02\x12'
    b"\x0cfloat16_castZ\t\n\x01x\x12\x04\n\x02\x08\x01b\t\n\x01y\x12\x04\n\x02\x08\n"
    b"B\x04\n\x00\x10\x12"
)


@functools.cache
def _float16_cast() -> ort.InferenceSession:
    """A one-node ONNX Runtime session: float32 -> float16 (built on first use)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(FLOAT16_CAST_ONNX, options, providers=["CPUExecutionProvider"])
