"""Flip test-time augmentation built into an ONNX graph: the served model averages itself.

`flip_graph(model)` wraps a segmentation graph whose spatial outputs are aligned with its input
(`[N, C, H, W]` in, `[N, K, H, W]` and per-image scores out): the batch is sent through the
network as it is and flipped left-right, up-down and both (one run of batch 4N), each spatial
output is flipped back, and every output is the mean of the four. Scores (outputs of rank < 4)
are averaged as they are. The server needs nothing new: the wrapped graph is an ordinary ONNX
file named by `config.yaml`'s `model_file`, and the single-pass graph stays beside it (its
weights, explain graph and parity checks are unchanged).

    python -m vision.segment.flip_tta models/tile-defects/1/model.onnx model.flip4.onnx

`check_flips` proves the wrapped graph gives the mean of the single graph over the flipped inputs
(ONNX Runtime on both sides); the command refuses to write a graph that fails it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

PREFIX = "single/"
METADATA_KEY = "vision.flip_tta"
# axes flipped for each of the four passes, in the order the batch is concatenated
FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))
INT64_MIN = np.iinfo(np.int64).min


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    tensor = helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    return helper.make_node("Constant", [], [name], value=tensor)


def _flip(source: str, axes: tuple[int, ...], out: str) -> list[onnx.NodeProto]:
    """Nodes that reverse `source` along `axes` (Slice with step -1) into `out`."""
    if not axes:
        return [helper.make_node("Identity", [source], [out])]
    n = len(axes)
    names = [f"{out}/{k}" for k in ("starts", "ends", "axes", "steps")]
    return [
        _const(names[0], [-1] * n),
        _const(names[1], [int(INT64_MIN)] * n),
        _const(names[2], list(axes)),
        _const(names[3], [-1] * n),
        helper.make_node("Slice", [source, *names], [out]),
    ]


def _spatial_outputs(graph: onnx.GraphProto) -> set[str]:
    return {o.name for o in graph.output if len(o.type.tensor_type.shape.dim) == 4}


def flip_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` wrapped in the four-flip average (see the module docstring)."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.input[0].type.tensor_type.shape.dim) != 4:
        raise ValueError("flip TTA needs one [N, C, H, W] input")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 18:
        raise ValueError(f"flip TTA builds opset 18 Split nodes; the graph is opset {opset}")
    image = graph.input[0].name
    inner = onnx.compose.add_prefix(model, PREFIX, rename_inputs=True, rename_outputs=True)
    nodes: list[onnx.NodeProto] = []
    flipped = []
    for k, axes in enumerate(FLIPS):
        nodes += _flip(image, axes, f"tta/in{k}")
        flipped.append(f"tta/in{k}")
    nodes.append(helper.make_node("Concat", flipped, [PREFIX + image], axis=0))
    nodes += list(inner.graph.node)
    spatial = _spatial_outputs(graph)
    for output in graph.output:
        parts = [f"tta/{output.name}/{k}" for k in range(len(FLIPS))]
        nodes.append(
            helper.make_node("Split", [PREFIX + output.name], parts, axis=0, num_outputs=len(FLIPS))
        )
        back = []
        for part, axes in zip(parts, FLIPS, strict=True):
            nodes += _flip(part, axes if output.name in spatial else (), part + "/back")
            back.append(part + "/back")
        nodes.append(helper.make_node("Mean", back, [output.name]))
    wrapped = helper.make_graph(
        nodes,
        graph.name + "_flip4",
        list(graph.input),
        list(graph.output),
        initializer=list(inner.graph.initializer),
    )
    out = helper.make_model(wrapped, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    helper.set_model_props(out, {METADATA_KEY: "mean of identity, flip W, flip H, flip HW"})
    onnx.checker.check_model(out)
    return out


def is_flip_graph(path: str | Path) -> bool:
    """Whether the ONNX file at `path` was written by `flip_graph` (its metadata says so)."""
    model = onnx.load(str(path), load_external_data=False)
    return any(p.key == METADATA_KEY for p in model.metadata_props)


def flip_back_mean(run, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the wrapped graph must give: `run` (images -> {name: array}) on each flip, spatial
    outputs flipped back, the four averaged."""
    per_flip = []
    for axes in FLIPS:
        outputs = run(np.ascontiguousarray(np.flip(images, axes)) if axes else images)
        per_flip.append({k: np.flip(v, axes) if v.ndim == 4 else v for k, v in outputs.items()})
    return {k: np.mean([o[k] for o in per_flip], axis=0) for k in per_flip[0]}


def check_flips(single: Path, wrapped: Path, atol: float = 1e-4) -> float:
    """Largest |difference| between `wrapped` and `flip_back_mean` of `single` on a seeded
    batch of 2; raises ValueError above `atol`."""
    from vision.runtime import OnnxModel

    plain, tta = OnnxModel(single), OnnxModel(wrapped)
    spec = plain.inputs[0]
    shape = [2, *(d if isinstance(d, int) and d > 0 else 64 for d in spec.shape[1:])]
    images = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = flip_back_mean(lambda x: plain.run({spec.name: x}), images)
    got = tta.run({spec.name: images})
    worst = max(float(np.abs(got[k] - v).max()) for k, v in want.items())
    if worst > atol:
        raise ValueError(f"{wrapped}: the flip graph is off by {worst:.3g} (> {atol})")
    return worst


def main(argv: list[str] | None = None) -> int:
    """``python -m vision.segment.flip_tta SINGLE.onnx NAME``: write NAME beside SINGLE."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("single", type=Path, help="the single-pass graph (e.g. 1/model.onnx)")
    parser.add_argument("name", help="file name of the flip graph, written beside it")
    args = parser.parse_args(argv)
    target = args.single.with_name(args.name)
    onnx.save(flip_graph(onnx.load(str(args.single))), str(target))
    worst = check_flips(args.single, target)
    print(f"{target}: mean of 4 flips, max |diff| vs flipping by hand {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
