"""A detector's shared-forward explain graph cut in two: forward once, targets, backward once.

The data plane's `Explain` for a detector ran the plain model (to find the boxes) and then the
explain graph, whose forward pass repeats the plain one. Cut at the targets, the graph's forward
part (the nodes that do not depend on ``target_class`` / ``target_anchor``) gives ``output0``
and the activations the backward reads; NMS on that ``output0`` picks the targets; the backward
part, fed those activations as ONNX Runtime values (no copies), gives the CAMs. Same nodes,
same kernels: the two parts give the whole graph's outputs (bit for bit on one thread; checked
when built, `agree`).

The cut is made with the ``onnx`` package. `write_split` stores the two parts beside the graph
(``model.explain.forward.onnx``, ``model.explain.backward.onnx`` and ``model.explain.split.json``
with the cut and the whole graph's sha256; `vision explain-export` writes them, and
``python -m vision.xai.split_graph GRAPH...`` for an existing graph), so that a server install,
which has ONNX Runtime but not ``onnx``, loads them as they are. Stored parts whose recorded
sha256 is not the graph's are ignored (a re-exported graph with stale parts). Without stored parts
and without ``onnx`` no split is made, and the caller runs the plain model and the whole graph as
before.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
    return _transposes_after_cut(graph, cut, on_targets)


def _transposes_after_cut(graph, cut: list[str], on_targets: set[str]) -> list[str]:
    """`cut` with each value that an image-only Transpose makes for target-dependent MatMuls
    only replaced by that Transpose's input: the Transpose then lands in the backward part,
    where ONNX Runtime folds it into the product (a transposed operand, no copy); made in the
    forward part, a transpose to a short last axis is a slow strided copy."""
    made_by = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    out: list[str] = []
    for name in cut:
        node = made_by.get(name)
        moved = (
            node is not None
            and node.op_type == "Transpose"
            and all(r.op_type == "MatMul" and set(r.input) & on_targets for r in readers[name])
        )
        keep = node.input[0] if moved else name
        if keep not in out:
            out.append(keep)
    return out


def part_paths(path: Path) -> tuple[Path, Path, Path]:
    """Where the stored parts of the explain graph at `path` live: forward, backward, record."""
    stem = Path(path).with_suffix("")
    return (
        stem.with_name(stem.name + ".forward.onnx"),
        stem.with_name(stem.name + ".backward.onnx"),
        stem.with_name(stem.name + ".split.json"),
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stored_split(path: Path) -> tuple[bytes, bytes, list[str]] | None:
    """The parts `write_split` stored for the graph at `path`; None when absent or stale."""
    forward, backward, record = part_paths(path)
    if not (forward.is_file() and backward.is_file() and record.is_file()):
        return None
    meta = json.loads(record.read_text())
    if meta.get("source_sha256") != _sha256(path):
        log.warning("explain graph %s: its stored split parts are stale; ignored", path.name)
        return None
    return forward.read_bytes(), backward.read_bytes(), list(meta["cut"])


def write_split(path: Path) -> list[Path] | None:
    """Store the split of the explain graph at `path` beside it (needs ``onnx``); the written
    files, or None when the graph is not one that splits (`split_models`)."""
    parts = _cut(Path(path))
    if parts is None:
        return None
    forward, backward, cut = parts
    files = part_paths(path)
    files[0].write_bytes(forward)
    files[1].write_bytes(backward)
    record = {"source": Path(path).name, "source_sha256": _sha256(path), "cut": cut}
    files[2].write_text(json.dumps(record, indent=2) + "\n")
    return list(files)


def split_models(path: Path) -> tuple[bytes, bytes, list[str]] | None:
    """(forward part, backward part, cut tensors) of the explain graph at `path`, serialized:
    the stored parts when they are current, else cut now with ``onnx``; None when neither is
    possible or the graph is not a detection shared-forward one (inputs ``images``,
    ``target_class``, ``target_anchor``; outputs end with ``cam``)."""
    return stored_split(Path(path)) or _cut(Path(path))


def _cut(path: Path) -> tuple[bytes, bytes, list[str]] | None:
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

    def __init__(
        self,
        forward: bytes,
        backward: bytes,
        cut: list[str],
        spec: RuntimeSpec,
        keep_arena: bool = True,
    ):
        options = session_options(spec)
        cpu = ["CPUExecutionProvider"]
        self.forward_session = ort.InferenceSession(forward, options, providers=cpu)
        self.backward_session = ort.InferenceSession(backward, options, providers=cpu)
        self.cut = list(cut)
        self.forward_names = [o.name for o in self.forward_session.get_outputs()]
        self.model_outputs = self.forward_names[: len(self.forward_names) - len(cut)]
        # Kept (`ExplainSpec.keep_arena`): the backward's intermediates grow with K, and an
        # arena handed back after each run is mapped and faulted in again on the next.
        self.run_options = run_options(shrink_arena=not keep_arena)

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


def open_split(path: Path, spec: RuntimeSpec, whole, keep_arena: bool = True) -> SplitGraph | None:
    """The split of the explain graph at `path`, checked against `whole` (its `OnnxModel`):
    on a fixed random image and two targets both parts together must give every output
    (`agree`). None when it cannot be made (`split_models`) or the check fails (logged).
    `keep_arena`: `SplitGraph`'s."""
    parts = split_models(path)
    if parts is None:
        return None
    split = SplitGraph(*parts, spec, keep_arena)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m vision.xai.split_graph GRAPH...``: store the split parts of each graph."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("graphs", nargs="+", type=Path, help="model.explain.onnx files")
    args = parser.parse_args(argv)
    for graph in args.graphs:
        files = write_split(graph)
        print(f"{graph}: " + (", ".join(f.name for f in files) if files else "does not split"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
