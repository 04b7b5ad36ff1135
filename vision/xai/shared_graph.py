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

import copy
import operator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils.fusion import fuse_conv_bn_eval

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
        self.model, self.target_layers = fold_batch_norms(inner.model, inner.target_layers)
        self.kind, self.method = inner.kind, inner.method
        heads = getattr(self.model, "heads", None)
        self.cls_branches = [h.cls for h in heads] if heads is not None else []
        self.local_heads = local_heads_apply(self.model, self.target_layers)
        self.consumers: Any = False  # not looked for yet (`_consumer_convs`)
        self.probe_shapes: list[tuple[int, ...]] | None = None

    def _scores_fn(self, images: Tensor) -> Any:
        """f(*probes) -> (class scores [1, nc, A], (model outputs, activations)) for `vjp`."""

        def run(*probes: Tensor) -> tuple[Tensor, tuple]:
            seen: list[Tensor] = []
            logits: list[Tensor] = []

            def at_cls(_m: nn.Module, _a: Any, out: Tensor) -> None:
                logits.append(out.flatten(2))

            hooks = self._target_layer_hooks(seen, probes)
            hooks += [(b, at_cls) for b in self.cls_branches]
            outputs = _run_hooked(self.model, images, hooks)
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
        if self.local_heads:
            return self._forward_local(images, target_class, target_anchor)
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

    def _forward_local(
        self, images: Tensor, target_class: Tensor, target_anchor: Tensor
    ) -> tuple[Tensor, ...]:
        """As `forward`, with each head's backward done on a window around its target.

        A class score at one cell depends on the neck feature (the input of ``smooth.l``) only
        within 2 cells (two 3x3 convolutions), so the smooth + class-branch backward of each
        target runs on a 5x5 crop (`local_neck_grads`) instead of the whole level, and only
        the dense part below the neck (laterals, top-down sums, backbone) is batched over K.
        """
        consumers = self._consumer_convs(images) if self.method == "hirescam" else None
        shapes = self._activation_shapes(images) if consumers is None else consumers[1]
        probes = [torch.zeros(s, dtype=images.dtype, device=images.device) for s in shapes]
        at = None if consumers is None else consumers[0]
        with torch.enable_grad():
            feats, vjp_fn, (outputs, activations) = torch.func.vjp(
                self._neck_fn(images, at), *probes, has_aux=True
            )
            cotangents = local_neck_grads(self.model, feats, target_class, target_anchor)
            grads = torch.func.vmap(vjp_fn)(tuple(c[:, None] for c in cotangents))
        if at is not None:
            cams = [
                sum(tap_cam(activations[0], c, g[:, 0]) for c, g in zip(at, grads, strict=True))
            ]
            return (*outputs, combine_cams(cams))
        cams = [  # activations [1, ...] broadcast over the K gradients
            cam_from(a, g[:, 0].detach(), self.method)
            for a, g in zip(activations, grads, strict=True)
        ]
        return (*outputs, combine_cams(cams))

    def _neck_fn(self, images: Tensor, at: list[nn.Conv2d] | None = None) -> Any:
        """f(*probes) -> (neck features, the inputs of ``smooth.*``; (outputs, activations)).

        The probes are added to the target layers' outputs, or with `at` to those convolutions'
        outputs (`_consumer_convs`; the target layer's output is then still recorded)."""

        def run(*probes: Tensor) -> tuple[tuple, tuple]:
            seen: list[Tensor] = []
            feats: list[Tensor] = []

            def at_smooth(_m: nn.Module, args: Any) -> None:
                feats.append(args[0])

            hooks = self._target_layer_hooks(seen, probes if at is None else None)
            hooks += [(c, _adds(probes[i])) for i, c in enumerate(at or [])]
            pre_hooks = [(s, at_smooth) for s in self.model.smooth]
            outputs = _run_hooked(self.model, images, hooks, pre_hooks)
            if len(seen) != len(self.target_layers) or len(feats) != len(self.model.smooth):
                raise RuntimeError(f"target layers ran {len(seen)} times, not once each")
            return tuple(feats), (tuple(o.detach() for o in outputs), tuple(seen))

        return run

    def _target_layer_hooks(self, seen: list[Tensor], probes: tuple | None) -> list[tuple]:
        """(layer, forward hook) per target layer: each records its output in `seen` and, with
        `probes`, adds its probe to it (the point `vjp` differentiates at)."""

        def at_layer(i: int) -> Any:
            def hook(_m: nn.Module, _a: Any, out: Tensor) -> Tensor:
                seen.append(out.detach())
                return out if probes is None else out + probes[i]

            return hook

        return [(m, at_layer(i)) for i, m in enumerate(self.target_layers)]

    def _consumer_convs(self, images: Tensor) -> tuple[list[nn.Conv2d], list[tuple]] | None:
        """The convolutions that read the (single) target layer's output, and their output
        shapes, when every reader is one (checked on an eager run: each module that takes the
        output is an ungrouped, undilated Conv2d, and the output reaches no other module);
        else None. Found once, before tracing."""
        if self.consumers is not False:
            return self.consumers
        self.consumers = None
        if len(self.target_layers) != 1:
            return None
        found: dict[str, Any] = {"out": None, "readers": [], "shapes": []}

        def mark(_m: nn.Module, _a: Any, out: Tensor) -> None:
            found["out"] = out

        def reads(module: nn.Module, args: Any, out: Any) -> None:
            if found["out"] is not None and any(a is found["out"] for a in args):
                found["readers"].append(module)
                found["shapes"].append(tuple(out.shape) if isinstance(out, Tensor) else None)

        leaves = [m for m in self.model.modules() if not list(m.children())]
        handles = [self.target_layers[0].register_forward_hook(mark)]
        handles += [m.register_forward_hook(reads) for m in leaves]
        try:
            with torch.no_grad():
                self.model(torch.zeros(tuple(images.shape), dtype=images.dtype))
        finally:
            for handle in handles:
                handle.remove()
        readers = found["readers"]
        if (
            readers
            and all(_plain_conv(m) for m in readers)
            and _only_read_by(self, readers, tuple(images.shape))
        ):
            self.consumers = (readers, found["shapes"])
        return self.consumers

    def prepare(self, images: Tensor) -> None:
        """Look at the model eagerly, once, for images of this size, before tracing."""
        self._activation_shapes(images)
        if self.local_heads and self.method == "hirescam":
            self._consumer_convs(images)

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


def _adds(probe: Tensor) -> Any:
    """A forward hook that adds `probe` to the module's output."""
    return lambda _m, _a, out: out + probe


def _run_hooked(
    model: nn.Module, images: Tensor, hooks: list[tuple], pre_hooks: list[tuple] = ()
) -> tuple[Tensor, ...]:
    """`model(images)` as a tuple of outputs, with (module, hook) forward `hooks` and forward
    `pre_hooks` registered for this one call."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    handles += [m.register_forward_pre_hook(h) for m, h in pre_hooks]
    try:
        outputs = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


# Neck feature cells a class score at one cell depends on, each way: smooth.l's 3x3 convolution
# and the class branch's 3x3 one.
LOCAL_RADIUS = 2


def local_heads_apply(model: nn.Module, target_layers: list[nn.Module]) -> bool:
    """Whether `_forward_local` applies: the project's `Detector` layout (``lateral``,
    ``smooth``, ``heads`` with ``cls`` = 3x3 conv block + 1x1 conv) and target layers below the
    neck (none inside ``smooth`` or ``heads``, whose backward the local path does not form)."""
    needed = ("lateral", "smooth", "heads")
    if not all(isinstance(getattr(model, n, None), nn.ModuleList) for n in needed):
        return False
    above = {id(m) for n in ("smooth", "heads") for m in getattr(model, n).modules()}
    if any(id(layer) in above for layer in target_layers):
        return False
    pairs = zip(model.smooth, model.heads, strict=True)
    return all(_three_by_three(s) and _class_branch(h.cls) for s, h in pairs)


def _three_by_three(block: nn.Module) -> bool:
    """A `vision.detect.model.conv` block: 3x3 stride-1 padding-1 Conv2d first."""
    first = block[0] if isinstance(block, nn.Sequential) and len(block) else None
    return (
        isinstance(first, nn.Conv2d)
        and tuple(first.kernel_size) == (3, 3)
        and tuple(first.stride) == (1, 1)
        and tuple(first.padding) == (1, 1)
        and tuple(first.dilation) == (1, 1)
    )


def _class_branch(cls: nn.Module) -> bool:
    """``Sequential(conv block 3x3, Conv2d 1x1)``."""
    if not isinstance(cls, nn.Sequential) or len(cls) != 2 or not _three_by_three(cls[0]):
        return False
    last = cls[1]
    return isinstance(last, nn.Conv2d) and tuple(last.kernel_size) == (1, 1)


def local_neck_grads(
    model: nn.Module, feats: tuple[Tensor, ...], target_class: Tensor, target_anchor: Tensor
) -> list[Tensor]:
    """Per level, d(sigmoid class score of each target) / d(neck feature) [K, C, h, w].

    Each target is scored on a (2r+1)^2 crop of its level's feature around its cell (zero
    outside the map, as the 3x3 padding), with the smooth block's output zeroed outside the map
    (the class branch's padding); the crop gradient is put back at its place. Targets of other
    levels get zeros (their one-hot cotangent there is zero).
    """
    r = LOCAL_RADIUS
    side = 2 * r + 1
    steps = torch.arange(side, device=target_anchor.device)
    offset = 0
    out = []
    for feat, smooth, head in zip(feats, model.smooth, model.heads, strict=True):
        h, w = int(feat.shape[-2]), int(feat.shape[-1])
        local = target_anchor - offset
        inside = ((local >= 0) & (local < h * w)).to(feat.dtype)
        local = local.clamp(0, h * w - 1)
        rows, cols = local // w, local % w
        ys = rows[:, None] + steps  # in the padded map
        xs = cols[:, None] + steps
        padded = F.pad(feat.detach()[0], (r, r, r, r))
        crops = padded[:, ys[:, :, None], xs[:, None, :]].permute(1, 0, 2, 3)
        valid = _inside(ys - r, h)[:, :, None] * _inside(xs - r, w)[:, None, :]
        valid = valid.to(feat.dtype)[:, None]

        def score(c: Tensor, smooth=smooth, head=head, valid=valid) -> Tensor:
            s = smooth(c) * valid
            v = head.cls[0](s)[:, :, r : r + 1, r : r + 1]
            return head.cls[1](v).flatten(1).sigmoid()

        logits, pull = torch.func.vjp(score, crops)
        onehot = one_hot(target_class, logits.shape[1], feat.dtype) * inside[:, None]
        (grad,) = pull(onehot)
        out.append(_place(grad, ys, xs, h, w, r))
        offset += h * w
    return out


def _plain_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and tuple(module.dilation) == (1, 1)
        and isinstance(module.padding, tuple)
        and module.padding_mode == "zeros"
    )


def _only_read_by(
    module: SharedExplainModule, readers: list[nn.Module], shape: tuple[int, ...]
) -> bool:
    """Whether the target layer's output reaches the model's outputs through `readers` only:
    with their outputs frozen, the outputs do not depend on it."""
    layer = module.target_layers[0]
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    frozen: dict[int, Tensor] = {}

    def freeze(m: nn.Module, _a: Any, out: Tensor) -> Tensor:
        return frozen.setdefault(id(m), out.detach())

    def perturb(_m: nn.Module, _a: Any, out: Tensor) -> Tensor:
        return out + 1.0

    outputs = []
    for change in (False, True):
        handles = [r.register_forward_hook(freeze) for r in readers]
        if change:
            handles.append(layer.register_forward_hook(perturb))
        try:
            with torch.no_grad():
                out = module.model(image)
        finally:
            for handle in handles:
                handle.remove()
        outputs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return bool(torch.equal(outputs[0], outputs[1]))


def tap_cam(activation: Tensor, conv: nn.Conv2d, grad: Tensor) -> Tensor:
    """HiResCAM sum_c A_c * dS/dA_c [K, H, W] of the part of dS/dA that flows through `conv`,
    from dS/d(conv output) `grad` [K, D, h, w], without forming dS/dA.

    dS/dA = conv^T(grad), so sum_c A_c (conv^T grad)_c at x = sum over kernel taps t and output
    cells o with s*o + t - p = x of sum_d grad_d(o) * (W[d, :, t] . A(x)): each tap's
    contribution of A (a strided 1x1 convolution, once for the image) dotted with the K
    gradients, then put back at x by a transposed convolution with one-hot kernels (taps in,
    one map out). The (K x D x C) transposed convolution of the gradient is not needed.
    """
    weight = conv.weight
    d, c, kh, kw = weight.shape
    sy, sx = conv.stride
    py, px = conv.padding
    h, w = grad.shape[-2:]
    padded = F.pad(activation, (px, px, py, py))
    dots = []
    for ty in range(kh):
        for tx in range(kw):
            sample = padded[:, :, ty : ty + sy * (h - 1) + 1 : sy, tx : tx + sx * (w - 1) + 1 : sx]
            part = F.conv2d(sample, weight[:, :, ty : ty + 1, tx : tx + 1])  # [1, D, h, w]
            dots.append((grad * part).sum(1))
    dots = torch.stack(dots, 1)  # [K, taps, h, w]
    onehot = torch.eye(kh * kw, dtype=grad.dtype, device=grad.device).reshape(kh * kw, 1, kh, kw)
    height, width = activation.shape[-2:]
    extra = (
        height - ((h - 1) * sy - 2 * py + kh),
        width - ((w - 1) * sx - 2 * px + kw),
    )
    placed = F.conv_transpose2d(
        dots, onehot, stride=(sy, sx), padding=(py, px), output_padding=extra
    )
    return placed[:, 0]


def _inside(index: Tensor, size: int) -> Tensor:
    return (index >= 0) & (index < size)


def _place(grad: Tensor, ys: Tensor, xs: Tensor, h: int, w: int, r: int) -> Tensor:
    """Crops [K, C, s, s] at (ys, xs) of the r-padded map -> [K, C, h, w] (zeros elsewhere).

    Placed by a product with one-hot rows (a crop cell outside the map, in the padding, has an
    all-zero row), which ONNX Runtime runs faster than zero-filling and scattering.
    """
    k, c, side, _ = grad.shape
    ys, xs = ys - r, xs - r
    valid = (_inside(ys, h)[:, :, None] & _inside(xs, w)[:, None, :]).reshape(k, -1, 1)
    flat = (ys[:, :, None] * w + xs[:, None, :]).reshape(k, side * side, 1)
    cells = torch.arange(h * w, device=grad.device)
    onehot = ((cells == flat) & valid).to(grad.dtype)  # [K, s*s, h*w]
    return torch.bmm(grad.reshape(k, c, side * side), onehot).reshape(k, c, h, w)


def fold_batch_norms(
    model: nn.Module, target_layers: list[nn.Module]
) -> tuple[nn.Module, list[nn.Module]]:
    """A copy of the eval-mode `model` with each Conv2d -> BatchNorm2d pair of a Sequential
    fused into one Conv2d (and `target_layers` found in the copy).

    Inference is unchanged up to rounding (ONNX Runtime fuses them anyway), but the traced
    backward then has no per-channel BatchNorm scale to apply to every one of the K gradients.
    A pair whose Conv2d is itself a target layer is kept: its output would change.
    """
    names = {id(m): n for n, m in model.named_modules()}
    targets = {id(m) for m in target_layers}
    folded = copy.deepcopy(model).eval()
    originals = dict(model.named_modules())
    for name, module in folded.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            kept = id(originals[f"{name}.{i}" if name else str(i)]) in targets
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and not kept:
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return folded, [folded.get_submodule(names[id(m)]) for m in target_layers]


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
    module.prepare(inputs[0])
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
    """Dynamo-export the traced graph: static image batch 1, dynamic target count; check it.
    Products of image-only factors are then formed once (`graph_rewrite.fold_image_factors`:
    the exporter leaves SiLU's derivative as two multiplications of each of the K gradients)."""
    from vision.xai.graph_rewrite import rewrite_explain_graph

    targets = torch.export.Dim("targets", min=1, max=1024)
    shapes = (None, {0: targets}, {0: targets})
    path = write_onnx(graph, inputs, path, input_names, output_names, shapes, opset)
    rewrite_explain_graph(path)
    return path


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
