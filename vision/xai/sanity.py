"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

Cascading randomisation on the eager torch model: layers are re-initialised one after another
from the output down (`reset_parameters`, seeded), and after each step the CAM of the same target
is compared with the trained model's CAM by Spearman rank correlation. A map that survives the
randomisation of the layers that make the prediction explains the image, not the model. How the
correlations are judged (inside a detection's box; |rho| for a segmenter) is
`vision.xai.sanity_scoring`.

A "layer" is one weight layer (convolution / linear) with the parameterised modules that run
right after it (norm, PReLU). Parallel per-level detector heads (`heads.0.cls.1`,
`heads.1.cls.1`, ...) count as one layer, and layers whose parameters cannot change the target
score (a detector's box branch) are left out.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vision.config import ModelConfig
from vision.runtime import OnnxModel
from vision.types import Detection, PreprocessMeta
from vision.xai import cam as cam_ops
from vision.xai.eval_data import Target
from vision.xai.explain_graph import ExplainModule, build_explain_module
from vision.xai.sanity_scoring import box_cells, score_step, verdict
from vision.xai.targets import target_scores

MAX_CHECKPOINT_DIFF = 1e-2  # torch vs ONNX outputs, relative to the largest |output|
PARALLEL = re.compile(r"^(heads)\.\d+\.")
Inputs = tuple[Tensor, ...]  # (images [1, C, H, W], target_class [1], aux or None)
Box = tuple[Detection, PreprocessMeta] | None  # a detector target's explained box


@dataclass
class Layer:
    """One randomisation step's unit: a display name and its parameterised modules."""

    name: str
    modules: list[str]


def _owns_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def execution_order(model: nn.Module, images: Tensor) -> list[str]:
    """Names of the modules that own parameters, in the order they first run."""
    seen: list[str] = []
    handles = [
        m.register_forward_pre_hook(
            lambda _m, _a, n=name: seen.append(n) if n not in seen else None
        )
        for name, m in model.named_modules()
        if _owns_params(m)
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return seen


def relevant_modules(explain: ExplainModule, targets: list[Inputs]) -> set[str]:
    """Modules with a parameter whose gradient of some target score is non-zero."""
    named = [(n, p) for n, p in explain.model.named_parameters() if p.requires_grad]
    found: set[str] = set()
    for images, cls, aux in targets:
        with torch.enable_grad():
            out = explain.model(images)
            out = out[0] if isinstance(out, (tuple, list)) else out
            score = target_scores(explain.kind, out, cls, aux).sum()
            grads = torch.autograd.grad(score, [p for _, p in named], allow_unused=True)
        for (name, _), g in zip(named, grads, strict=True):
            if g is not None and bool(g.abs().max() > 0):
                found.add(name.rsplit(".", 1)[0])
    return found


def layer_groups(model: nn.Module, images: Tensor, relevant: set[str]) -> list[Layer]:
    """Weight layers, output first (see the module docstring)."""
    units: list[list[str]] = []
    for name in execution_order(model, images):
        weight = getattr(model.get_submodule(name), "weight", None)
        if not units or (isinstance(weight, Tensor) and weight.ndim >= 2):
            units.append([name])
        else:
            units[-1].append(name)
    merged: dict[str, Layer] = {}
    for unit in units:
        key = PARALLEL.sub(r"\1.*.", unit[0])
        layer = merged.pop(key, Layer(key, []))
        layer.modules += unit
        merged[key] = layer  # re-inserted: dict order follows each layer's last run
    layers = [g for g in merged.values() if relevant.intersection(g.modules)]
    return layers[::-1]


def randomise(model: nn.Module, names: list[str], seed: int) -> None:
    """Re-initialise the named modules in place (`reset_parameters`, else N(0, std))."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name in names:
            module = model.get_submodule(name)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                continue
            for p in module.parameters(recurse=False):
                p.normal_(0.0, float(p.std()) if p.numel() > 1 else 0.02)


def cam_maps(explain: ExplainModule, targets: list[Inputs]) -> list[np.ndarray]:
    """ReLU + min-max CAM [h, w] of each target (the map users see, before upsampling)."""
    maps = []
    for inputs in targets:
        args = tuple(t for t in inputs if t is not None)
        maps.append(cam_ops.normalize(explain(*args)[-1].numpy())[0])
    return maps


def cut_points(count: int, max_steps: int) -> list[int]:
    """How many layers are randomised after each step: 1 (the top layer) ... count."""
    if count == 0:
        return []
    steps = count if max_steps <= 0 else min(count, max_steps)
    return sorted({int(round(x)) for x in np.linspace(1, count, steps)})


def randomisation_check(
    model: nn.Module,
    target_layer: str,
    kind: str,
    method: str,
    targets: list[Inputs],
    max_steps: int = 12,
    seed: int = 0,
    boxes: list[Box] | None = None,
) -> dict:
    """Cascading randomisation: rank correlation of trained and randomised CAMs after each step,
    over the image and, for targets with a box, inside it (`sanity_scoring.score_step`)."""
    model = copy.deepcopy(model)
    explain = build_explain_module(model, target_layer, kind, method)
    trained = cam_maps(explain, targets)
    grid = trained[0].shape
    masks = [None if b is None else box_cells(b[0], b[1], grid) for b in boxes or []]
    masks += [None] * (len(targets) - len(masks))
    layers = layer_groups(explain.model, targets[0][0], relevant_modules(explain, targets))
    steps, done = [], 0
    for cut in cut_points(len(layers), max_steps):
        for i in range(done, cut):
            randomise(explain.model, layers[i].modules, seed + i)
        done = cut
        scores = score_step(trained, cam_maps(explain, targets), masks)
        steps.append({"layers_randomised": cut, "down_to": layers[cut - 1].name, **scores})
    return {
        "layers": [g.name for g in layers],
        "steps": steps,
        "targets": len(targets),
        "cam_grid": list(grid),
        "verdict": verdict(kind, steps),
    }


def load_torch_model(task: str, checkpoint: Path) -> nn.Module:
    """The eager model of a training checkpoint (detector or segmenter), in eval mode."""
    if task == "detection":  # as vision.detect.exporting.load_checkpoint, without torchvision
        from vision.detect.model import build_model, spec_from_dict

        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = build_model(spec_from_dict(state["spec"]))
        model.load_state_dict(state["ema"])
        return model.eval()
    from vision.segment.export import _load_checkpoint

    return _load_checkpoint(checkpoint)[0]


def torch_inputs(target: Target) -> Inputs:
    """(images, target_class, aux) of one target, as the explain graph takes them."""
    images = torch.from_numpy(np.ascontiguousarray(target.tensor[np.newaxis], dtype=np.float32))
    cls = torch.tensor([target.class_id], dtype=torch.int64)
    if target.detection is not None:
        return images, cls, torch.tensor([target.detection.anchor], dtype=torch.int64)
    return images, cls, torch.ones(1, 1, *images.shape[-2:], dtype=torch.float32)


def checkpoint_difference(explain: ExplainModule, explained: OnnxModel, inputs: Inputs) -> float:
    """Largest |torch - ONNX| model output on one target's `inputs`, relative to the largest
    |output|. `explained` is the explain graph: its first output is the network whose heat
    maps are checked, which the served graph may wrap (tile-defects serves a 4-flip average of
    it), so the checkpoint is compared with what is explained, not with what is served."""
    with torch.no_grad():
        want = explain.model(inputs[0])
    want = (want[0] if isinstance(want, (tuple, list)) else want).numpy()
    feeds = {spec.name: x.numpy() for spec, x in zip(explained.inputs, inputs, strict=True)}
    got = explained.run(feeds)[explained.output_names[0]]
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-9))


def run_randomisation(
    config: ModelConfig,
    targets: list[Target],
    explained: OnnxModel,
    checkpoint: Path,
    opts: Any,
    model_dir: Path | None = None,
) -> dict:
    """The randomisation check of `vision xai-eval` on a checkpoint or, when `checkpoint` is
    absent and `model_dir` given, on the weights shipped in the model's folder; `explained`
    (the explain graph) tells whether those weights are the network it explains."""
    torch.set_num_threads(max(1, opts.threads))
    if checkpoint.is_file():
        model = load_torch_model(config.task, checkpoint)
    else:
        from vision.weights import load_bundled

        model = load_bundled(model_dir.name, model_dir.parent)
        checkpoint = model_dir / "weights (shipped)"
    layer = config.explain.target_layer
    inputs = [torch_inputs(t) for t in targets]
    explain = build_explain_module(model, layer, config.task, config.explain.method)
    diff = checkpoint_difference(explain, explained, inputs[0])
    base = {"checkpoint": str(checkpoint), "checkpoint_vs_onnx_rel_diff": diff}
    if diff > MAX_CHECKPOINT_DIFF:
        return {**base, "skipped": "the checkpoint does not reproduce the ONNX model's outputs"}
    boxes = [None if t.detection is None else (t.detection, t.meta) for t in targets]
    result = randomisation_check(
        model, layer, config.task, config.explain.method, inputs, opts.rand_steps, opts.seed, boxes
    )
    first = result["steps"][0] if result["steps"] else {}
    return {
        **base,
        **result,
        "top_layer_spearman": first.get("spearman_mean"),
        "top_layer_abs_spearman": first.get("abs_spearman_mean"),
        "top_layer_box_abs_spearman": first.get("box_abs_spearman_mean"),
        "goal_abs_spearman_below": result["verdict"]["goal_abs_spearman_below"],
        "goal_met": result["verdict"]["goal_met"],
    }
