"""A detector's shared-forward explain graph cut in two: forward once, targets, backward once.

The data plane's `Explain` for a detector ran the plain model (to find the boxes) and then the
explain graph, whose forward pass repeats the plain one. Cut at the targets, the graph's forward
part (the nodes that do not depend on ``target_class`` / ``target_anchor``) gives ``output0``
and the activations the backward reads; NMS on that ``output0`` picks the targets; the backward
part, fed those activations as ONNX Runtime values (no copies), gives the CAMs. Same nodes,
same kernels: the two parts give the whole graph's outputs (bit for bit on one thread; checked
when built, `agree`).

The cut is made with the ``onnx`` package, at load: without it (a server install may lack it)
no split is made and the caller runs the plain model and the whole graph as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vision.runtime import RuntimeSpec, run_options, session_options

log = logging.getLogger(__name__)

TARGET_INPUTS = ("target_class", "target_anchor")
IMAGE_INPUT = "images"


def cut_points(graph) -> list[str]:
    """Names of the image-dependent tensors that target-dependent nodes read (the values the
    forward part hands to the backward part), in graph order. `graph`: an onnx GraphProto in
    topological order."""
    on_targets: set[str] = set(TARGET_INPUTS)
    on_image: set[str] = {IMAGE_INPUT}
    for node in graph.node:
        inputs = set(node.input)
        if inputs & on_targets:
            on_targets.update(node.output)
        elif inputs & on_image:
            on_image.update(node.output)
    cut: list[str] = []
    for node in graph.node:
        if set(node.input) & on_targets:
            cut += [i for i in node.input if i in on_image and i not in cut]
    return cut


def split_models(path: Path) -> tuple[bytes, bytes, list[str]] | None:
    """(forward part, backward part, cut tensors) of the explain graph at `path`, serialized;
    None when the ``onnx`` package is missing or the graph is not a detection shared-forward
    one (inputs ``images``, ``target_class``, ``target_anchor``; outputs end with ``cam``)."""
    try:
        import onnx
        from onnx.utils import Extractor
    except ImportError:
        return None
    model = onnx.load(str(path))
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [IMAGE_INPUT, *TARGET_INPUTS] or outputs[-1:] != ["cam"]:
        return None
    cut = cut_points(model.graph)
    if set(cut) & set(outputs):  # a model output the backward reads too: not handled
        return None
    extractor = Extractor(model)
    forward = extractor.extract_model([IMAGE_INPUT], outputs[:-1] + cut)
    backward = extractor.extract_model(cut + list(TARGET_INPUTS), ["cam"])
    return forward.SerializeToString(), backward.SerializeToString(), cut


class SplitGraph:
    """The two parts of one explain graph as CPU ONNX Runtime sessions."""

    def __init__(self, forward: bytes, backward: bytes, cut: list[str], spec: RuntimeSpec):
        options = session_options(spec)
        cpu = ["CPUExecutionProvider"]
        self.forward_session = ort.InferenceSession(forward, options, providers=cpu)
        self.backward_session = ort.InferenceSession(backward, options, providers=cpu)
        self.cut = list(cut)
        self.forward_names = [o.name for o in self.forward_session.get_outputs()]
        self.model_outputs = self.forward_names[: len(self.forward_names) - len(cut)]
        self.run_options = run_options()

    def forward(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        """(model outputs as numpy, the cut values as ONNX Runtime values) for `images` [1]."""
        feed = {IMAGE_INPUT: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(images))}
        values = self.forward_session.run_with_ort_values(
            self.forward_names, feed, self.run_options
        )
        named = dict(zip(self.forward_names, values, strict=True))
        outputs = {name: named.pop(name).numpy() for name in self.model_outputs}
        return outputs, named

    def cams(self, state: dict, classes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Raw CAMs [K, h, w] of the K targets from the forward part's `state`."""
        feeds = dict(state)
        feeds["target_class"] = ort.OrtValue.ortvalue_from_numpy(classes.astype(np.int64))
        feeds["target_anchor"] = ort.OrtValue.ortvalue_from_numpy(anchors.astype(np.int64))
        (cam,) = self.backward_session.run_with_ort_values(["cam"], feeds, self.run_options)
        return cam.numpy()


# ONNX Runtime on several threads is not bit-reproducible from run to run (the whole graph
# against itself: up to 3e-7 in a heat map), so the checks allow this much of the largest value;
# a wrong cut or another model is off by far more. On one thread the parts are bit-identical.
RELATIVE_TOLERANCE = 1e-4


def agree(got: np.ndarray, want: np.ndarray) -> bool:
    """Same shape and every value within `RELATIVE_TOLERANCE` of `want`'s largest magnitude."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if not np.issubdtype(want.dtype, np.floating):
        return bool(np.array_equal(got, want))
    scale = float(np.abs(want).max()) if want.size else 0.0
    return bool(np.abs(got - want).max(initial=0.0) <= RELATIVE_TOLERANCE * scale)


def open_split(path: Path, spec: RuntimeSpec, whole) -> SplitGraph | None:
    """The split of the explain graph at `path`, checked against `whole` (its `OnnxModel`):
    on a fixed random image and two targets both parts together must give every output
    (`agree`). None when it cannot be made (`split_models`) or the check fails (logged)."""
    parts = split_models(path)
    if parts is None:
        return None
    split = SplitGraph(*parts, spec)
    shape = [d if d > 0 else 1 for d in whole.inputs[0].shape]
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    outputs, state = split.forward(image)
    scores = outputs[whole.output_names[0]]
    anchors = np.array([0, scores.shape[-1] - 1], dtype=np.int64)
    classes = np.zeros(2, dtype=np.int64)
    want = whole.run({IMAGE_INPUT: image, "target_class": classes, "target_anchor": anchors})
    got = dict(outputs, cam=split.cams(state, classes, anchors))
    if not all(name in got and agree(got[name], value) for name, value in want.items()):
        log.warning("explain graph %s: its split parts differ from it; not split", path.name)
        return None
    return split
