"""Torch weights shipped beside a bundled ONNX model (`<version>/weights.safetensors`).

`save_weights` / `load_weights` (`vision.weights_file`, re-exported here) write and read a
network's state dict as fp32 safetensors.
`build_network` makes the torch network a bundled model's card describes (the recipe's
architecture, as served: a detector in export mode, a segmenter with its image head) and
`load_bundled` loads the shipped weights into it, so checks that need eager torch (Grad-CAM
parity, the export parity gate, randomisation sanity) run without a training checkpoint.

`state_from_onnx` recovers a state dict from an exported ONNX graph: the exporter keeps parameter
names but folds each eval-mode BatchNorm into the convolution before it, so such a BatchNorm is
recovered as the identity (weight 1, mean 0, variance 1 - eps) carrying the folded shift as its
bias when the convolution has none; PReLU slopes (unnamed in the graph) are found through the
node that consumes the convolution's output. The result computes the same function in eval mode;
it is not the training checkpoint (batch statistics and the unfolded scale are gone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from vision.paths import default_repository
from vision.weights_file import WEIGHTS_FILE, file_sha256, load_weights, save_weights

__all__ = [
    "WEIGHTS_FILE",
    "build_network",
    "file_sha256",
    "load_bundled",
    "load_weights",
    "save_weights",
    "state_from_onnx",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def build_network(card: dict) -> nn.Module:
    """The untrained torch network of a card in the `vision.model_card` schema, as served."""
    if card["task"] == "detection":
        from vision.detect.model import DetectorSpec, build_model

        recipe = card["recipe"]
        spec = DetectorSpec(
            in_channels=int(recipe["channels"]),
            num_classes=len(card["labels"]),
            widths=tuple(recipe["widths"]),
            neck=int(recipe["neck"]),
            strides=tuple(recipe["strides"]),
        )
        model = build_model(spec)
        model.export_mode = True
        return model.eval()
    if card["task"] == "volumetric_segmentation":
        from vision.segment3d.recipe import Recipe3D
        from vision.segment3d.recipe import build_network as build_3d

        return build_3d(Recipe3D.from_dict(card["recipe"])).eval()
    return _segmenter(card)


def _segmenter(card: dict) -> nn.Module:
    from vision.segment.image_head import with_image_score
    from vision.segment.model import Recipe, build_model

    recipe = Recipe(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in card["recipe"].items()}
    )
    model = build_model(recipe).eval()
    head = recipe.extra.get("image_head")
    if not head:
        return model
    features = _pooled_width(model, head["layers"], recipe)
    return with_image_score(model, {**head, "weight": [0.0] * features, "bias": 0.0})


def _pooled_width(model: nn.Module, layers: list[str], recipe: Any) -> int:
    """Width of the image head's input: max and mean of each named layer's channels."""
    from vision.segment.image_head import pooled_features

    example = np.zeros((1, recipe.in_channels, 32, 32), np.float32)
    return int(pooled_features(model, layers, example).shape[1])


def load_bundled(name: str, repo: str | Path | None = None) -> nn.Module:
    """The bundled model `name` as an eager torch network (eval mode) with its shipped weights."""
    from vision.model_card import read_model_card

    model_dir = Path(repo or default_repository()) / name
    card = read_model_card(model_dir)
    if card.weights is None or card.weights.get("parity") is None:
        raise FileNotFoundError(f"{model_dir}: the card records no weights of its own")
    model = build_network(card.to_dict())
    return load_weights(model, model_dir / card.weights["file"])


def state_from_onnx(model: nn.Module, graph: onnx.ModelProto, example: torch.Tensor) -> dict:
    """`model`'s state dict recovered from the ONNX export `graph` (see the module docstring).

    `example` is any input the model accepts (used once to see which module feeds which).
    Raises ValueError when a parameter cannot be found or a graph weight goes unused.
    """
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    state = model.state_dict()
    found = {k: _matched(k, inits[k], v) for k, v in state.items() if k in inits}
    feeds = _feeders(model, example)
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if isinstance(module, _NORMS) and f"{name}.weight" not in found:
            found |= _identity_norm(name, module, modules[feeds[name]], feeds[name], inits)
        elif isinstance(module, nn.PReLU) and f"{name}.weight" not in found:
            conv = _conv_before(name, feeds, modules)
            found[f"{name}.weight"] = _prelu_slope(graph, f"{conv}.weight", module)
    missing = sorted(set(state) - set(found))
    if missing:
        raise ValueError(f"not recovered from the graph: {missing}")
    _check_all_used(graph, found)
    return found


def _matched(key: str, array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    if tuple(array.shape) != tuple(like.shape):
        raise ValueError(f"{key}: graph {array.shape} vs model {tuple(like.shape)}")
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _feeders(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """For each module whose input is another module's output: the producing module's name."""
    produced: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # hold outputs so that ids are not reused
    feeds: dict[str, str] = {}

    def hook(name: str) -> Any:
        def run(_module: nn.Module, args: tuple, output: Any) -> None:
            if args and isinstance(args[0], torch.Tensor) and id(args[0]) in produced:
                feeds[name] = produced[id(args[0])]
            if isinstance(output, torch.Tensor):
                produced[id(output)] = name
                keep.append(output)

        return run

    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return feeds


def _identity_norm(
    name: str, norm: nn.Module, conv: nn.Module, conv_name: str, inits: dict
) -> dict[str, torch.Tensor]:
    """A BatchNorm folded into `conv`: identity, with the folded shift when `conv` has no bias."""
    if not isinstance(conv, _CONVS):
        raise ValueError(f"{name}: fed by {conv_name} ({type(conv).__name__}), not a convolution")
    channels = norm.num_features
    shift = np.zeros(channels, np.float32)
    if conv.bias is None:
        key = f"{conv_name}.weight_bias"
        if key not in inits:
            raise ValueError(f"{name}: no folded bias {key} in the graph")
        shift = inits[key]
    return {
        f"{name}.weight": torch.ones(channels),
        f"{name}.bias": torch.from_numpy(np.array(shift, np.float32)),
        f"{name}.running_mean": torch.zeros(channels),
        f"{name}.running_var": torch.full((channels,), 1.0 - norm.eps),
        f"{name}.num_batches_tracked": torch.tensor(0),
    }


def _conv_before(name: str, feeds: dict[str, str], modules: dict[str, nn.Module]) -> str:
    """The convolution whose output reaches `name` through BatchNorm / Dropout / Identity only
    (each the identity in eval mode once the BatchNorm is folded)."""
    source = feeds.get(name, "")
    while isinstance(modules.get(source), (*_NORMS, nn.Dropout, nn.Identity)):
        source = feeds.get(source, "")
    if not isinstance(modules.get(source), _CONVS):
        raise ValueError(f"{name}: no convolution before it")
    return source


def _prelu_slope(graph: onnx.ModelProto, conv_weight: str, prelu: nn.PReLU) -> torch.Tensor:
    """The slope of the PRelu node that consumes the output of the Conv using `conv_weight`."""
    inits = {i.name: i for i in graph.graph.initializer}
    convs = [n for n in graph.graph.node if conv_weight in n.input[1:2]]
    if len(convs) != 1:
        raise ValueError(f"{conv_weight}: {len(convs)} convolutions in the graph")
    users = [n for n in graph.graph.node if n.op_type == "PRelu" and convs[0].output[0] in n.input]
    if len(users) != 1 or users[0].input[1] not in inits:
        raise ValueError(f"{conv_weight}: no single PRelu after it")
    slope = numpy_helper.to_array(inits[users[0].input[1]]).reshape(prelu.weight.shape)
    return torch.from_numpy(np.array(slope, np.float32))


def _check_all_used(graph: onnx.ModelProto, found: dict) -> None:
    """Every weight of a parameterised node must be one the recovery used."""
    used = {k for k in found} | {f"{k}_bias" for k in found}
    ops = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"}
    weights = {i.name for i in graph.graph.initializer}
    unused = [
        x
        for n in graph.graph.node
        if n.op_type in ops
        for x in n.input[1:]
        if x in weights and x not in used
    ]
    if unused:
        raise ValueError(f"graph weights not recovered: {sorted(set(unused))}")
