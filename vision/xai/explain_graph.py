"""Grad-CAM inside an exported ONNX graph, so the torch-free server explains at inference speed.

How: `ExplainModule` runs the model, differentiates the target score with respect to the target
layer's activation (`torch.autograd.grad`), and forms the CAM. `make_fx` (symbolic shapes)
traces that forward-and-backward into a graph of plain ATen ops; convolution backward is
decomposed into a (transposed) convolution, so no gradient op reaches the exporter. The dynamo
ONNX exporter then writes the graph with a dynamic batch dimension.

Graph I/O (`model.explain.onnx`):

* inputs: ``images`` [N, C, H, W] float32, ``target_class`` [N] int64, plus ``target_mask``
  [N, 1, H, W] float32 (segmentation) or ``target_anchor`` [N] int64 (detection);
* outputs: the model's usual outputs (``logits`` / ``output0``), then ``cam`` [N, h, w] at the
  target layer's resolution, RAW: before ReLU and normalisation (see `vision.xai.cam`).

Each image's CAM depends only on its own target, so a batch of the same image repeated with N
targets gives N heat maps in one run.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from torch.fx.experimental.proxy_tensor import make_fx

from vision.runtime import OnnxModel
from vision.xai import cam as cam_ops
from vision.xai.layers import combine_cams, resolve_layers
from vision.xai.targets import (
    MODEL_OUTPUTS,
    TARGET_INPUTS,
    check_kind,
    default_targets,
    gradcam_targets,
    target_scores,
)

log = logging.getLogger(__name__)

Method = Literal["gradcam", "gradcam++", "hirescam"]
METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam")
OPSET = 18  # torch 2.14's exporter implements opset >= 18; down-conversion to 17 fails here
MIN_PEARSON = 0.99
CAM_RTOL = 1e-4  # ONNX vs eager: max abs diff / max |cam|
_aten = torch.ops.aten


class ExplainParityError(RuntimeError):
    """The exported explain graph does not reproduce the eager / pytorch-grad-cam CAM."""


def default_target_layer(model: nn.Module) -> str:
    """Dotted name of the default Grad-CAM layer for the project's architectures.

    * MONAI ``UNet``: ``model.1.submodule``, the last decoder feature (stride 2, channels[0]
      wide). The final up block outputs the logits themselves (out_channels wide), so there
      is no wider layer closer to the output.
    * MONAI ``BasicUNet``: ``upcat_1``, the last decoder block before ``final_conv``.
    * A segmenter with an image-level head (`WithImageScore`): its segmenter's layer.
    * The project's `Detector`: ``smooth.0``, the finest-stride neck feature (stride 8). It
      feeds only the stride-8 head: anchors at coarser strides get an all-zero CAM there;
      ``backbone.stages.0`` (stride 8, shared by every level) explains all anchors.
    """
    name = type(model).__name__
    if name == "WithImageScore":  # vision.segment.image_head: the segmenter inside
        return "features.model." + default_target_layer(model.features.model)
    if name == "UNet" and hasattr(model, "model"):
        return "model.1.submodule"
    if name == "BasicUNet":
        return "upcat_1"
    if hasattr(model, "smooth") and hasattr(model, "heads"):
        return "smooth.0"
    raise ValueError(f"no default Grad-CAM layer for {name}; pass target_layer")


def resolve_layer(model: nn.Module, layer: nn.Module | list | str | None) -> list[nn.Module]:
    """The target layer(s) given as a module, modules, a name spec (`vision.xai.layers`:
    ``a`` or ``a,b,c``), or None (the default layer)."""
    return resolve_layers(model, layer or default_target_layer(model))


def cam_from(activation: Tensor, grads: Tensor, method: str) -> Tensor:
    """Raw CAM [N, *spatial] from activations and gradients [N, K, *spatial].

    Grad-CAM: channel weights = spatial mean of the gradient. Grad-CAM++: pytorch-grad-cam's
    closed form (eq. 19 of arXiv:1710.11063). HiResCAM: gradient times activation per position
    (arXiv:2011.08891), which keeps a detection's map on its own box.
    """
    spatial = tuple(range(2, activation.ndim))
    if method == "hirescam":
        return (grads * activation).sum(1)
    if method == "gradcam":
        weights = grads.mean(spatial, keepdim=True)
    elif method == "gradcam++":
        g2 = grads * grads
        g3 = g2 * grads
        total = activation.sum(spatial, keepdim=True)
        aij = g2 / (2 * g2 + total * g3 + 1e-6)
        aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
        weights = (torch.relu(grads) * aij).sum(spatial, keepdim=True)
    else:
        raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
    return (weights * activation).sum(1)


class ExplainModule(nn.Module):
    """forward(images, target_class[, target_aux]) -> (*model outputs, raw cam [N, h, w]).

    `target_layers`: one module or several (their maps summed on the finest grid,
    `vision.xai.layers.combine_cams`).
    """

    def __init__(
        self, model: nn.Module, target_layers: nn.Module | list, kind: str, method: str
    ) -> None:
        super().__init__()
        check_kind(kind)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {list(METHODS)}")
        layers = [target_layers] if isinstance(target_layers, nn.Module) else list(target_layers)
        self.model, self.kind, self.method = model, kind, method
        self.target_layers = layers

    @property
    def target_layer(self) -> nn.Module:
        """The first target layer (the only one unless several were given)."""
        return self.target_layers[0]

    def _run(self, images: Tensor) -> tuple[tuple[Tensor, ...], list[Tensor]]:
        """Model outputs, and each target layer's output as a fresh leaf that requires grad."""
        seen: list[list[Tensor]] = [[] for _ in self.target_layers]

        def hook_for(i: int) -> Any:
            def hook(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
                seen[i].append(output.detach().requires_grad_(True))
                return seen[i][-1]

            return hook

        handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(self.target_layers)]
        try:
            outputs = self.model(images)
        finally:
            for handle in handles:
                handle.remove()
        if any(len(s) != 1 for s in seen):
            runs = [len(s) for s in seen]
            raise RuntimeError(f"target layers ran {runs} times in one forward; need once each")
        outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
        return outputs, [s[0] for s in seen]

    def forward(
        self, images: Tensor, target_class: Tensor, target_aux: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """Model outputs (detached) and the raw CAM of the target scores at the target layer."""
        with torch.enable_grad():
            outputs, activations = self._run(images)
            score = target_scores(self.kind, outputs[0], target_class, target_aux).sum()
            grads = torch.autograd.grad(score, activations, allow_unused=True)
        cams = [
            cam_from(a.detach(), torch.zeros_like(a) if g is None else g, self.method)
            for a, g in zip(activations, grads, strict=True)
        ]
        return (*(o.detach() for o in outputs), combine_cams(cams))


def build_explain_module(
    model: nn.Module,
    target_layer: nn.Module | str | None = None,
    target_kind: str = "segmentation",
    method: str = "gradcam",
) -> ExplainModule:
    """Wrap `model` (put in eval mode; a detector is put in export mode) for Grad-CAM.

    `target_layer`: a submodule, its dotted name, several names (``a,b``), or None for
    `default_target_layer`.
    The returned module's cam output is RAW (before ReLU / normalisation).
    """
    model = model.eval()
    if target_kind == "detection" and hasattr(model, "export_mode"):
        model.export_mode = True  # the YOLOv8 [N, 4 + nc, A] layout that the server reads
    return ExplainModule(model, resolve_layer(model, target_layer), target_kind, method).eval()


def _convolution_backward(
    grad_output: Tensor,
    inp: Tensor,
    weight: Tensor,
    bias_sizes: Any,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    transposed: bool,
    output_padding: list[int],
    groups: int,
    output_mask: list[bool],
) -> Any:
    """Input gradient of a convolution as a (transposed) convolution; weights need none."""
    if output_mask[1] or output_mask[2]:
        return NotImplemented
    dims = len(stride)
    if not transposed and groups == 1 and all(s == 1 for s in stride):
        # Stride 1: the input gradient is an ordinary convolution with the kernel flipped and
        # its channel axes swapped. ONNX Runtime's Conv is several times faster than its
        # ConvTranspose on CPU (issue 19: ConvTranspose was over half of the explain graph).
        flipped = weight.transpose(0, 1).flip(list(range(2, 2 + dims)))
        pad = [dilation[i] * (weight.shape[2 + i] - 1) - padding[i] for i in range(dims)]
        if all(p >= 0 for p in pad):
            grad = _aten.convolution.default(
                grad_output, flipped, None, stride, pad, dilation, False, [0] * dims, 1
            )
            return grad, None, None
    if transposed:
        grad = _aten.convolution.default(
            grad_output, weight, None, stride, padding, dilation, False, [0] * dims, groups
        )
        return grad, None, None
    extra = [
        inp.shape[2 + i]
        - ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i])
        - dilation[i] * (weight.shape[2 + i] - 1)
        - 1
        for i in range(dims)
    ]
    grad = _aten.convolution.default(
        grad_output, weight, None, stride, padding, dilation, True, extra, groups
    )
    return grad, None, None


def explain_decompositions() -> dict:
    """ATen decompositions of backward ops only, plus convolution backward -> convolution.

    Forward ops stay whole (PReLU, SiLU, ... export as single ONNX nodes, as in the plain graph).
    """
    from torch._decomp import decomposition_table

    table = {op: fn for op, fn in decomposition_table.items() if "backward" in str(op)}
    table[_aten.convolution_backward.default] = _convolution_backward
    table[_aten.silu_backward.default] = _silu_backward
    return table


def _silu_backward(grad_output: Tensor, x: Tensor) -> Tensor:
    """SiLU's input gradient with its derivative formed first: under `vmap` over K gradients
    of one image (`vision.xai.shared_graph`), the derivative is then computed once and applied
    with one multiplication per gradient, not two."""
    sigmoid = torch.sigmoid(x)
    return grad_output * (sigmoid * (1 + x * (1 - sigmoid)))


def trace_explain(module: ExplainModule, inputs: tuple[Tensor, ...]) -> torch.fx.GraphModule:
    """Forward + backward as one graph of ordinary ATen ops (symbolic shapes)."""
    return make_fx(
        module,
        tracing_mode="symbolic",
        decomposition_table=explain_decompositions(),
        _allow_non_fake_inputs=True,  # the model's parameters stay real constants
    )(*inputs)


def explain_io_names(kind: str, output_names: tuple[str, ...] | None = None) -> tuple[list, list]:
    """ONNX input and output names of an explain graph."""
    outputs = [*(output_names or MODEL_OUTPUTS[kind]), "cam"]
    return ["images", *TARGET_INPUTS[kind]], outputs


@dataclass
class ExplainExport:
    """What `export_explain_graph` wrote and measured."""

    path: Path
    input_names: list[str]
    output_names: list[str]
    parity: dict = field(default_factory=dict)


def _batched(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Repeat a batch of one to two (torch.export specialises a traced size of 1)."""
    if inputs[0].shape[0] >= 2:
        return inputs
    return tuple(t.repeat(2, *([1] * (t.ndim - 1))) for t in inputs)


def example_inputs(module: ExplainModule, images: Tensor, targets: tuple | None = None) -> tuple:
    """(images, target_class[, aux]); default targets explain the model's own prediction."""
    if targets is None:
        with torch.no_grad():
            out = module.model(images)
        out = out[0] if isinstance(out, (tuple, list)) else out
        targets = default_targets(module.kind, out)
    return tuple(t for t in (images, *targets) if t is not None)


def write_onnx(
    graph: torch.fx.GraphModule,
    inputs: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: tuple | None = None,
    opset: int = OPSET,
) -> Path:
    """Dynamo-export the traced graph, then check it. `dynamic_shapes` default: a dynamic
    batch on every input (the shared-forward graph passes its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if dynamic_shapes is None:
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic_shapes = tuple({0: batch} for _ in inputs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(
            graph.eval(),
            inputs,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def export_explain_graph(
    model: nn.Module,
    target_layer: nn.Module | str | None,
    target_kind: str,
    example: Tensor,
    path: str | Path,
    method: str = "gradcam",
    targets: tuple | None = None,
    output_names: tuple[str, ...] | None = None,
    check: bool = True,
    shared: bool | None = None,
) -> ExplainExport:
    """Write the explain graph to `path` (dynamic batch) and, with `check`, gate on parity.

    `targets`: (target_class, aux) tensors for the example; default: the model's prediction.
    `shared` (default: for detection without given targets): one image and K targets, one
    forward pass shared by all (`vision.xai.shared_graph`). Parity (see `explain_parity`)
    raises ExplainParityError when it fails.
    """
    module = build_explain_module(model, target_layer, target_kind, method)
    if shared is None:
        shared = target_kind == "detection" and targets is None
    if shared:
        return _export_shared(module, example, Path(path), output_names, check)
    inputs = example_inputs(module, example, targets)
    traced = _batched(inputs)
    graph = trace_explain(module, traced)
    in_names, out_names = explain_io_names(target_kind, output_names)
    path = write_onnx(graph, traced, Path(path), in_names, out_names)
    result = ExplainExport(path, in_names, out_names)
    if check:
        result.parity = explain_parity(module, path, inputs)
        _gate(result.parity)
    return result


def _export_shared(
    module: ExplainModule, example: Tensor, path: Path, outputs: tuple | None, check: bool
) -> ExplainExport:
    from vision.xai.shared_graph import export_shared, shared_parity

    names = explain_io_names(module.kind, outputs)
    path, inputs = export_shared(module, example, path, names, OPSET)
    result = ExplainExport(path, *names)
    if check:
        result.parity = shared_parity(module, path, inputs)
        _gate(result.parity)
    return result


def _feeds(names: list[str], inputs: tuple[Tensor, ...]) -> dict[str, np.ndarray]:
    return {
        n: np.ascontiguousarray(t.detach().cpu().numpy())
        for n, t in zip(names, inputs, strict=True)
    }


def run_explain_graph(session: OnnxModel, inputs: tuple[Tensor, ...]) -> dict[str, np.ndarray]:
    """Run an explain graph on torch inputs (in the graph's input order)."""
    return session.run(_feeds([s.name for s in session.inputs], inputs))


def gradcam_reference(module: ExplainModule, inputs: tuple[Tensor, ...]) -> np.ndarray:
    """pytorch-grad-cam's map (eager torch, same layer and targets): [N, H, W] in [0, 1]."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM

    cls = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM}[module.method]
    targets = gradcam_targets(module.kind, *inputs[1:])
    explainer = cls(_FirstOutput(module.model), list(module.target_layers))
    try:  # not `with`: its __exit__ swallows exceptions and the call then returns None
        return explainer(inputs[0], targets)
    finally:
        explainer.activations_and_grads.release()


class _FirstOutput(nn.Module):
    """The model with only its first output (the one targets score), as pytorch-grad-cam
    expects one tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        outputs = self.model(images)
        return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def compare_maps(ours: np.ndarray, reference: np.ndarray, cell_px: int = 0) -> dict:
    """Per-image Pearson r (worst) and argmax agreement of two [N, H, W] maps.

    `cell_px` > 0 (several target layers): also count peaks at most `cell_px` apart
    (``argmax_within_cell``; `cell_size`); the combined map is resized twice (coarse level ->
    finest grid -> input) where pytorch-grad-cam resizes each level once, which moves a flat
    peak within its coarse cell.
    """
    rs, same, near, close = [], 0, 0, 0
    for a, b in zip(ours, reference, strict=True):
        rs.append(cam_ops.pearson(a, b))
        same += int(a.argmax() == b.argmax())
        near += int(b.flat[a.argmax()] >= b.max() - 1e-4)  # a tie within float noise
        pa, pb = np.unravel_index(a.argmax(), a.shape), np.unravel_index(b.argmax(), b.shape)
        close += int(max(abs(int(x) - int(y)) for x, y in zip(pa, pb, strict=True)) <= cell_px)
    out = {"pearson_min": min(rs), "argmax_identical": same, "argmax_tied": near, "n": len(rs)}
    if cell_px:
        out |= {"argmax_within_cell": close, "cell_px": cell_px}
    return out


def cell_size(module: ExplainModule, images: Tensor) -> int:
    """With several target layers, input pixels per cell of the COARSEST layer (the native
    resolution of a coarse-level anchor's map, where its resized peak can move); else 0."""
    if len(module.target_layers) < 2:
        return 0
    rows: list[int] = []
    handles = [
        m.register_forward_hook(lambda _m, _a, out: rows.append(int(out.shape[-2])))
        for m in module.target_layers
    ]
    try:
        with torch.no_grad():
            module.model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    return int(images.shape[-2]) // min(rows)


def explain_parity(module: ExplainModule, onnx_path: Path, inputs: tuple[Tensor, ...]) -> dict:
    """ONNX vs eager module (raw CAM and outputs), and vs pytorch-grad-cam when installed."""
    session = OnnxModel(onnx_path)
    got = run_explain_graph(session, inputs)
    want = [t.numpy() for t in module(*inputs)]
    diffs = {
        n: float(np.abs(got[n] - w).max()) for n, w in zip(session.output_names, want, strict=True)
    }
    scale = float(np.abs(want[-1]).max())
    report: dict = {"max_abs_diff": diffs, "cam_abs_max": scale}
    try:
        reference = gradcam_reference(module, inputs)
    except ImportError:
        log.warning("pytorch-grad-cam is not installed: no reference parity check")
        return report
    h, w = inputs[0].shape[-2:]
    ours = cam_ops.upsample(cam_ops.normalize(got["cam"]), int(h), int(w))
    report["gradcam"] = compare_maps(ours, reference, cell_size(module, inputs[0]))
    return report


def _gate(parity: dict) -> None:
    """Raise ExplainParityError when the parity report misses the thresholds."""
    cam_diff = parity["max_abs_diff"]["cam"]
    if cam_diff > CAM_RTOL * max(parity["cam_abs_max"], 1e-6):
        raise ExplainParityError(f"ONNX cam differs from eager by {cam_diff:.3g}: {parity}")
    ref = parity.get("gradcam")
    peaks = max(ref.get("argmax_tied", 0), ref.get("argmax_within_cell", 0)) if ref else 0
    if ref and (ref["pearson_min"] < MIN_PEARSON or peaks < ref["n"]):
        raise ExplainParityError(f"explain graph disagrees with pytorch-grad-cam: {ref}")
