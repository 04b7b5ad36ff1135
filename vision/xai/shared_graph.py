"""Detection explain graphs with ONE forward pass shared by every target of an image.

The older graph (`ExplainModule`) takes the image repeated once per target, so K boxes cost K
forward and K backward passes. `SharedExplainModule` takes the image once (batch 1) and K
targets: the forward runs once, and the K backward passes are one vectorised backward
(`torch.func.vjp` of the class scores with respect to a zero probe added to the target layer's
output, `torch.func.vmap` over K one-hot cotangents). `make_fx` traces it into plain ATen ops
with K symbolic, so the exported graph has a dynamic target dimension and a static image batch.

The scores are taken from the class branch of each head (forward hooks on ``heads.*.cls``), not
from ``output0``: differentiating a slice of ``output0`` sends all-zero gradients through every
box branch, dense work that changes no map. Models without such heads fall back on ``output0``.

Graph I/O: ``images`` [1, C, H, W], ``target_class`` [K] int64, ``target_anchor`` [K] int64 ->
``output0`` [1, 4 + nc, A] and ``cam`` [K, h, w] (raw, as `vision.xai.cam` expects).
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx

from vision.xai.explain_graph import ExplainModule, cam_from, explain_decompositions, write_onnx
from vision.xai.layers import combine_cams
from vision.xai.targets import BOX_FIELDS

SHARED_KINDS = ("detection",)
# Traced K: vmap bakes its batch size into shapes, so the trace uses a count that no dimension
# of the project's detectors has, and `generalise_targets` turns it back into K.
EXAMPLE_TARGETS = 23


def one_hot(index: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """[K] int64 -> [K, size] by comparison (traces without data-dependent checks)."""
    return (torch.arange(size, device=index.device) == index[:, None]).to(dtype)


class SharedExplainModule(nn.Module):
    """forward(images [1], target_class [K], target_anchor [K]) -> (output0, raw cam [K, h, w])."""

    def __init__(self, inner: ExplainModule) -> None:
        super().__init__()
        if inner.kind not in SHARED_KINDS:
            raise ValueError(f"shared-forward graphs explain {SHARED_KINDS}, not {inner.kind!r}")
        self.model, self.target_layers = inner.model, inner.target_layers
        self.kind, self.method = inner.kind, inner.method
        heads = getattr(self.model, "heads", None)
        self.cls_branches = [h.cls for h in heads] if heads is not None else []
        self.probe_shapes: list[tuple[int, ...]] | None = None

    def _scores_fn(self, images: Tensor) -> Any:
        """f(*probes) -> (class scores [1, nc, A], (model outputs, activations)) for `vjp`."""

        def run(*probes: Tensor) -> tuple[Tensor, tuple]:
            seen: list[Tensor] = []
            logits: list[Tensor] = []

            def at_layer(i: int) -> Any:
                def hook(_m: nn.Module, _a: Any, out: Tensor) -> Tensor:
                    seen.append(out.detach())
                    return out + probes[i]

                return hook

            def at_cls(_m: nn.Module, _a: Any, out: Tensor) -> None:
                logits.append(out.flatten(2))

            layers = enumerate(self.target_layers)
            handles = [m.register_forward_hook(at_layer(i)) for i, m in layers]
            handles += [b.register_forward_hook(at_cls) for b in self.cls_branches]
            try:
                outputs = self.model(images)
            finally:
                for handle in handles:
                    handle.remove()
            outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
            if len(seen) != len(probes):
                raise RuntimeError(f"target layers ran {len(seen)} times, not {len(probes)}")
            if self.cls_branches:
                scores = torch.cat(logits, 2).sigmoid()
            else:
                scores = outputs[0][:, BOX_FIELDS:, :]
            return scores, (tuple(o.detach() for o in outputs), tuple(seen))

        return run

    def forward(
        self, images: Tensor, target_class: Tensor, target_anchor: Tensor
    ) -> tuple[Tensor, ...]:
        """Model outputs of the one image and the raw CAM of each of the K targets."""
        probes = [
            torch.zeros(shape, dtype=images.dtype, device=images.device)
            for shape in self._activation_shapes(images)
        ]
        with torch.enable_grad():
            scores, vjp_fn, (outputs, activations) = torch.func.vjp(
                self._scores_fn(images), *probes, has_aux=True
            )
            classes = one_hot(target_class, scores.shape[1], scores.dtype)
            anchors = one_hot(target_anchor, scores.shape[2], scores.dtype)
            cotangents = (classes[:, :, None] * anchors[:, None, :])[:, None]
            grads = torch.func.vmap(vjp_fn)(cotangents)
        k = target_class.shape[0]
        cams = [
            cam_from(a.expand(k, *a.shape[1:]), g[:, 0].detach(), self.method)
            for a, g in zip(activations, grads, strict=True)
        ]
        return (*outputs, combine_cams(cams))

    def _activation_shapes(self, images: Tensor) -> list[tuple[int, ...]]:
        """Shapes of the target layers' outputs for images of this size (found once, eagerly,
        before tracing: the exported graph has a static image size)."""
        if self.probe_shapes is None:
            seen: dict[int, tuple[int, ...]] = {}

            def shape_of(i: int) -> Any:
                def hook(_m: nn.Module, _a: Any, out: Tensor) -> None:
                    seen.setdefault(i, tuple(out.shape))

                return hook

            layers = enumerate(self.target_layers)
            handles = [m.register_forward_hook(shape_of(i)) for i, m in layers]
            try:
                with torch.no_grad():
                    self.model(torch.zeros(tuple(images.shape), dtype=images.dtype))
            finally:
                for handle in handles:
                    handle.remove()
            self.probe_shapes = [seen[i] for i in range(len(self.target_layers))]
        return self.probe_shapes


def shared_example(module: SharedExplainModule, example: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(image [1], K classes, K anchors) for tracing: the K best anchors of the model's output."""
    image = example[:1]
    with torch.no_grad():
        out = module.model(image)
    out = out[0] if isinstance(out, (tuple, list)) else out
    best, cls = out[0, BOX_FIELDS:, :].max(0)
    anchors = best.topk(EXAMPLE_TARGETS).indices  # distinct anchors, the strongest first
    return image, cls[anchors], anchors


def trace_shared(module: SharedExplainModule, inputs: tuple[Tensor, ...]) -> torch.fx.GraphModule:
    """Forward + vectorised backward as one graph of ordinary ATen ops (K symbolic)."""
    if inputs[1].shape[0] != EXAMPLE_TARGETS:
        given = inputs[1].shape[0]
        raise ValueError(f"trace with {EXAMPLE_TARGETS} targets (shared_example), not {given}")
    module._activation_shapes(inputs[0])
    graph = make_fx(
        module,
        tracing_mode="symbolic",
        decomposition_table=explain_decompositions(),
        _allow_non_fake_inputs=True,
    )(*inputs)
    return generalise_targets(graph, EXAMPLE_TARGETS)


def generalise_targets(graph: torch.fx.GraphModule, traced: int) -> torch.fx.GraphModule:
    """Replace the literal target count `traced` in shape arguments by K read from the input.

    `vmap` specialises its batch size; every shape list that holds it (views, expands, new
    tensors) then reads ``target_class.shape[0]`` instead. The export parity gate runs the
    graph at several K, so a literal replaced by mistake cannot go unnoticed.
    """
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    with graph.graph.inserting_after(placeholders[-1]):
        count = graph.graph.call_function(torch.ops.aten.sym_size.int, (placeholders[1], 0))
    multiples: dict[int, torch.fx.Node] = {1: count}
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node is count:
            continue
        with graph.graph.inserting_before(node):
            node.args = tuple(_swap(graph, a, traced, count, multiples) for a in node.args)
    graph.graph.lint()
    graph.recompile()
    return graph


def _swap(graph: torch.fx.GraphModule, arg: Any, traced: int, count: Any, multiples: dict) -> Any:
    """`arg` with each multiple m * `traced` inside a shape list replaced by m * K."""
    if not isinstance(arg, (list, tuple)):
        return arg
    if not any(type(a) is int and a > 0 and a % traced == 0 for a in arg):
        return arg
    out = []
    for a in arg:
        if type(a) is int and a > 0 and a % traced == 0:
            m = a // traced
            if m not in multiples:
                multiples[m] = graph.graph.call_function(operator.mul, (count, m))
            a = multiples[m]
        out.append(a)
    return type(arg)(out)


def write_shared_onnx(
    graph: torch.fx.GraphModule,
    inputs: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> Path:
    """Dynamo-export the traced graph: static image batch 1, dynamic target count; check it."""
    targets = torch.export.Dim("targets", min=1, max=1024)
    shapes = (None, {0: targets}, {0: targets})
    return write_onnx(graph, inputs, path, input_names, output_names, shapes, opset)


def export_shared(
    inner: ExplainModule, example: Tensor, path: Path, names: tuple[list, list], opset: int
) -> tuple[Path, tuple[Tensor, ...]]:
    """Trace and write the shared-forward graph of `inner` for `example`; (path, inputs)."""
    module = SharedExplainModule(inner)
    inputs = shared_example(module, example)
    graph = trace_shared(module, inputs)
    return write_shared_onnx(graph, inputs, path, *names, opset), inputs


def shared_parity(inner: ExplainModule, path: Path, inputs: tuple[Tensor, ...]) -> dict:
    """The shared-forward graph at K = 1 and all example targets against the one-image-per-
    target eager module (raw CAM, outputs) and pytorch-grad-cam (when installed)."""
    from vision.runtime import OnnxModel
    from vision.xai import cam as cam_ops
    from vision.xai.explain_graph import (
        cell_size,
        compare_maps,
        gradcam_reference,
        run_explain_graph,
    )

    session = OnnxModel(path)
    image, classes, anchors = inputs
    report: dict = {"max_abs_diff": {}, "cam_abs_max": 0.0, "targets": []}
    for k in (1, classes.shape[0]):
        repeated = (image.repeat(k, 1, 1, 1), classes[:k], anchors[:k])
        got = run_explain_graph(session, (image, classes[:k], anchors[:k]))
        want = [t.detach().numpy() for t in inner(*repeated)]
        for name, value in zip(session.output_names, want, strict=True):
            value = value[:1] if name != "cam" else value
            diff = float(abs(got[name] - value).max())
            report["max_abs_diff"][name] = max(report["max_abs_diff"].get(name, 0.0), diff)
        report["cam_abs_max"] = max(report["cam_abs_max"], float(abs(want[-1]).max()))
        report["targets"].append(k)
        try:
            reference = gradcam_reference(inner, repeated)
        except ImportError:
            continue
        h, w = image.shape[-2:]
        ours = cam_ops.upsample(cam_ops.normalize(got["cam"]), int(h), int(w))
        found = compare_maps(ours, reference, cell_size(inner, image))
        old = report.get("gradcam")
        if old is None or found["pearson_min"] < old["pearson_min"]:
            report["gradcam"] = found
    return report
