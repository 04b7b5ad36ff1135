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
from vision.xai.local_heads import (
    LOCAL_RADIUS,
    WholeFactorNearest,
    finest_cam,
    local_crop_grads,
    local_heads_apply,
    local_neck_grads,
    one_hot,
    place,
    place_coarse,
    tap_cam,
)
from vision.xai.targets import BOX_FIELDS
from vision.xai.window_backward import (
    CoarsestLayout,
    coarsest_layout,
    coarsest_stage_grads,
    level_cells,
    silu_grad,
)

SHARED_KINDS = ("detection",)
# Traced K: vmap bakes its batch size into shapes, so the trace uses a count that no dimension
# of the project's detectors has, and `generalise_targets` turns it back into K.
EXAMPLE_TARGETS = 23


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
        self._finest_factors: tuple[int, int] | None = None  # (`_level_factors`)
        self._coarsest: CoarsestLayout | None = None  # (`prepare`, `_forward_windowed`)
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
        if consumers is not None and self._finest_lateral(consumers[0]) is not None:
            if self._coarsest is not None:
                return self._forward_windowed(images, target_class, target_anchor, consumers)
            return self._forward_finest_on_crops(images, target_class, target_anchor, consumers)
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
                sum(
                    tap_cam(activations[0], c, g.flatten(0, 1))  # [K, 1, D, h, w] -> [K, D, h, w]
                    for c, g in zip(at, grads, strict=True)
                )
            ]
            return (*outputs, combine_cams(cams))
        cams = [  # activations [1, ...] broadcast over the K gradients
            cam_from(a, g[:, 0].detach(), self.method)
            for a, g in zip(activations, grads, strict=True)
        ]
        return (*outputs, combine_cams(cams))

    def _forward_finest_on_crops(
        self, images: Tensor, target_class: Tensor, target_anchor: Tensor, consumers: tuple
    ) -> tuple[Tensor, ...]:
        """`_forward_local` where the finest level's lateral convolution reads the target layer
        (`_finest_lateral`): that level's gradient stays on the targets' crops.

        The finest neck feature is lateral(A) + up(coarser feature), read by its head only, so
        its gradient reaches A along two ways, each formed from the crops: through the lateral
        block (a 1x1 convolution and a SiLU: its share of the CAM is the crop's gradient times
        the image-only (conv(A) * SiLU'), summed over channels, `finest_cam`), and through the
        upsampling into the next level's cotangent (`place_coarse`). The dense backward then
        starts one level coarser, with no [K, C, h, w] tensor at the finest resolution (blood-
        cells: about 4 ms of a 46 ms backward at 10 boxes, one thread)."""
        finest, at, probes = self._other_readers(images, consumers)
        with torch.enable_grad():
            coarser, vjp_fn, (outputs, activations, (feat, lateral)) = torch.func.vjp(
                self._neck_fn(images, at, finest), *probes, has_aux=True
            )
            crops = local_crop_grads(self.model, (feat, *coarser), target_class, target_anchor)
            fy, fx = self._finest_factors
            cotangents = [
                place(c.grad, c.ys, c.xs, c.height, c.width, LOCAL_RADIUS) for c in crops[1:]
            ]
            cotangents[0] = cotangents[0] + place_coarse(crops[0], fy, fx)
            grads = torch.func.vmap(vjp_fn)(tuple(c[:, None] for c in cotangents))
        cam = finest_cam(finest, lateral, crops[0])
        for conv, grad in zip(at, grads, strict=True):
            cam = cam + tap_cam(activations[0], conv, grad.flatten(0, 1))
        return (*outputs, cam)

    def _forward_windowed(
        self, images: Tensor, target_class: Tensor, target_anchor: Tensor, consumers: tuple
    ) -> tuple[Tensor, ...]:
        """`_forward_finest_on_crops` with the last backbone stage's backward, and the coarsest
        lateral's, on a window around each target (`window_backward`, `_coarsest` found by
        `prepare`): the batched backward then covers the stride-16 stage and below only."""
        finest, at, probes = self._other_readers(images, consumers)
        with torch.enable_grad():
            cut, vjp_fn, aux = torch.func.vjp(
                self._below_coarsest_fn(images, at, finest), *probes, has_aux=True
            )
            outputs, activations, (feat, lateral), coarser, factors = aux
            crops = local_crop_grads(self.model, (feat, *coarser), target_class, target_anchor)
            fy, fx = self._finest_factors
            places = [place(c.grad, c.ys, c.xs, c.height, c.width, LOCAL_RADIUS) for c in crops]
            middle = places[1] + place_coarse(crops[0], fy, fx)  # d / d(neck level 1)
            coarsest = places[2] + F.avg_pool2d(middle, 2) * 4.0  # its nearest upsampling's adjoint
            centre = level_cells(target_anchor, [(c.height, c.width) for c in crops])
            into_stage = coarsest_stage_grads(
                self._coarsest, factors, coarsest, centre, tuple(cut[1].shape[-2:])
            )
            grads = torch.func.vmap(vjp_fn)((middle[:, None], into_stage[:, None]))
        cam = finest_cam(finest, lateral, crops[0])
        for conv, grad in zip(at, grads, strict=True):
            cam = cam + tap_cam(activations[0], conv, grad.flatten(0, 1))
        return (*outputs, cam)

    def _below_coarsest_fn(self, images: Tensor, at: list[nn.Conv2d], finest: nn.Module) -> Any:
        """f(*probes) -> ((level 1's lateral output, the last stage's input); aux) for
        `_forward_windowed`: the last stage runs on a detached input (its backward is formed on
        windows), its convolutions' SiLU' are recorded; aux = (outputs, target layer output,
        (finest neck feature, finest lateral output), (neck features 1, 2), SiLU' by name)."""
        layout = self._coarsest

        def run(*probes: Tensor) -> tuple[tuple, tuple]:
            seen: list[Tensor] = []
            feats: list[Tensor] = []
            found: dict[str, Tensor] = {}

            def keep(name: str, detach: bool = True) -> Any:
                def hook(_m: nn.Module, _a: Any, out: Tensor) -> None:
                    found[name] = out.detach() if detach else out

                return hook

            def cut_stage(_m: nn.Module, args: Any) -> tuple:
                found["stage_in"] = args[0]
                return (args[0].detach(),)

            hooks = self._target_layer_hooks(seen, None)
            hooks += [(c, _adds(probes[i])) for i, c in enumerate(at)]
            hooks += [(finest, keep("finest")), (self.model.lateral[1], keep("level_1", False))]
            hooks += [(conv, keep(name)) for name, conv in layout.convs().items()]
            pre_hooks = [(s, lambda _m, a: feats.append(a[0].detach())) for s in self.model.smooth]
            pre_hooks.append((layout.stage, cut_stage))
            outputs = _run_hooked(self.model, images, hooks, pre_hooks)
            factors = {name: silu_grad(found[name]) for name in layout.convs()}
            aux = (tuple(o.detach() for o in outputs), tuple(seen))
            aux += ((feats[0], found["finest"]), tuple(feats[1:]), factors)
            return (found["level_1"], found["stage_in"]), aux

        return run

    def _other_readers(self, images: Tensor, consumers: tuple) -> tuple:
        """(the finest lateral convolution, the target layer's other readers, a zero probe for
        each of their outputs) from `consumers` (`_consumer_convs`)."""
        readers, shapes = consumers
        finest = self._finest_lateral(readers)
        rest = [(c, sh) for c, sh in zip(readers, shapes, strict=True) if c is not finest]
        probes = [torch.zeros(sh, dtype=images.dtype, device=images.device) for _, sh in rest]
        return finest, [c for c, _ in rest], probes

    def _finest_lateral(self, readers: list[nn.Module]) -> nn.Conv2d | None:
        """The finest level's lateral convolution when `_forward_finest_on_crops` applies: it
        is one of the target layer's `readers`, a 1x1 stride-1 convolution followed in its
        block only by identities (folded BatchNorms) and a SiLU, and the next level is smaller
        by whole factors (`_finest_factors`, found with the level sizes on the eager run)."""
        block = self.model.lateral[0]
        if not isinstance(block, nn.Sequential) or len(self.model.lateral) < 2:
            return None
        conv, tail = block[0], list(block)[1:]
        if not any(conv is r for r in readers) or not _plain_conv(conv):
            return None
        if tuple(conv.kernel_size) != (1, 1) or tuple(conv.stride) != (1, 1):
            return None
        if tuple(conv.padding) != (0, 0) or not tail or not isinstance(tail[-1], nn.SiLU):
            return None
        if not all(isinstance(m, nn.Identity) for m in tail[:-1]):
            return None
        return conv if self._finest_factors is not None else None

    def _neck_fn(
        self, images: Tensor, at: list[nn.Conv2d] | None = None, finest: nn.Module | None = None
    ) -> Any:
        """f(*probes) -> (neck features, the inputs of ``smooth.*``; (outputs, activations)).

        The probes are added to the target layers' outputs, or with `at` to those convolutions'
        outputs (`_consumer_convs`; the target layer's output is then still recorded). With
        `finest` (the finest lateral convolution, `_forward_finest_on_crops`), the finest
        feature is left out of the differentiated outputs and given, with that convolution's
        output, as a third auxiliary value."""

        def run(*probes: Tensor) -> tuple[tuple, tuple]:
            seen: list[Tensor] = []
            feats: list[Tensor] = []
            lateral: list[Tensor] = []

            def at_smooth(_m: nn.Module, args: Any) -> None:
                feats.append(args[0])

            hooks = self._target_layer_hooks(seen, probes if at is None else None)
            hooks += [(c, _adds(probes[i])) for i, c in enumerate(at or [])]
            if finest is not None:
                hooks.append((finest, lambda _m, _a, out: lateral.append(out.detach())))
            pre_hooks = [(s, at_smooth) for s in self.model.smooth]
            outputs = _run_hooked(self.model, images, hooks, pre_hooks)
            if len(seen) != len(self.target_layers) or len(feats) != len(self.model.smooth):
                raise RuntimeError(f"target layers ran {len(seen)} times, not once each")
            aux = (tuple(o.detach() for o in outputs), tuple(seen))
            if finest is None:
                return tuple(feats), aux
            return tuple(feats[1:]), (*aux, (feats[0].detach(), lateral[0]))

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
        self._eager_run(images, handles)
        readers = found["readers"]
        if (
            readers
            and all(_plain_conv(m) for m in readers)
            and _only_read_by(self, readers, tuple(images.shape))
        ):
            self.consumers = (readers, found["shapes"])
        return self.consumers

    def _eager_run(self, images: Tensor, handles: list) -> None:
        """One eager run of the model on zeros shaped like `images` with the hook `handles`
        registered; they are removed afterwards, whatever happens."""
        try:
            with torch.no_grad():
                self.model(torch.zeros(tuple(images.shape), dtype=images.dtype))
        finally:
            for handle in handles:
                handle.remove()

    def prepare(self, images: Tensor) -> None:
        """Look at the model eagerly, once, for images of this size, before tracing."""
        self._activation_shapes(images)
        if self.local_heads and self.method == "hirescam":
            self._consumer_convs(images)
            sizes = self._level_sizes(images)
            self._finest_factors = self._level_factors(sizes)
            self._coarsest = self._coarsest_windows(sizes)

    def _coarsest_windows(self, sizes: list[tuple[int, int]]) -> CoarsestLayout | None:
        """The last stage's layout when `_forward_windowed` applies to neck levels of these
        `sizes`: three levels, each twice the next's size, and the last stage in
        `coarsest_layout`'s form."""
        if self._finest_factors != (2, 2) or len(sizes) != 3:
            return None
        (h1, w1), (h2, w2) = sizes[1], sizes[2]
        return coarsest_layout(self.model) if (h1, w1) == (2 * h2, 2 * w2) else None

    def _level_factors(self, sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
        """How many times the finest neck level is larger than the next, each way, when both
        are whole numbers (the nearest upsampling between them is then a block copy)."""
        (h0, w0), (h1, w1) = sizes[0], sizes[1]
        return (h0 // h1, w0 // w1) if h0 % h1 == 0 and w0 % w1 == 0 else None

    def _level_sizes(self, images: Tensor) -> list[tuple[int, int]]:
        """Each neck level's (h, w) for images of this size, finest first (an eager run)."""
        sizes: list[tuple[int, int]] = []
        hooks = [
            s.register_forward_pre_hook(lambda _m, a: sizes.append(tuple(a[0].shape[-2:])))
            for s in self.model.smooth
        ]
        self._eager_run(images, hooks)
        return sizes

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
            self._eager_run(images, handles)
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
        with WholeFactorNearest():
            outputs = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


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
    from vision.config import RuntimeSpec
    from vision.runtime import OnnxModel
    from vision.xai import cam as cam_ops
    from vision.xai.explain_graph import (
        cell_size,
        compare_maps,
        gradcam_reference,
        run_explain_graph,
    )

    # One thread: on several, ONNX Runtime now and then flips a comparison in the backward by
    # a 1e-7 difference and a CAM moves by about 0.5 % of its peak (stop 23), which failed this
    # gate once in about six exports in session 21 (test_split_serving compares on one thread
    # for the same reason).
    session = OnnxModel(path, RuntimeSpec(intra_op_threads=1))
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
