"""Shipped torch weights: save / load, recovery from an ONNX export, and on every bundled model
the export parity gate (torch vs ONNX Runtime) and the randomisation sanity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from torch import nn  # noqa: E402

from vision.config import load_config  # noqa: E402
from vision.paths import PROJECT_ROOT  # noqa: E402
from vision.runtime import OnnxModel  # noqa: E402
from vision.segment.flip_tta import flip_back_mean, is_flip_graph  # noqa: E402
from vision.weights import load_bundled, load_weights, save_weights, state_from_onnx  # noqa: E402

MODELS = PROJECT_ROOT / "models"
FLOAT_MODELS = ("blood-cells", "pcb-defects", "retina-vessels", "tile-defects")
ATOL, BOX_RTOL = 1e-4, 1e-6  # as scripts/recover_weights.py


class _Tiny(nn.Module):
    """conv (bias) + BN + PReLU, then conv (no bias) + BN + SiLU: both folding cases."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.PReLU())
        self.b = nn.Sequential(nn.Conv2d(4, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2))
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.b(self.a(x)))


def _trained_tiny() -> _Tiny:
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        for bn in (model.a[1], model.b[1]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
        model.a[2].weight.fill_(0.3)
    return model.eval()


def test_state_from_onnx_recovers_a_folded_export(tmp_path: Path) -> None:
    import onnx

    from vision.export import export_onnx

    model, x = _trained_tiny(), torch.randn(2, 1, 8, 8)
    path = export_onnx(model, x[:1], tmp_path / "tiny.onnx", ("images",), ("out",))
    graph = onnx.load(str(path))
    assert "BatchNormalization" not in {n.op_type for n in graph.graph.node}, "not folded"
    fresh = _Tiny()
    fresh.load_state_dict(state_from_onnx(fresh, graph, x[:1]))
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), model(x), atol=1e-5)
    assert float(fresh.a[2].weight.detach()) == pytest.approx(0.3)


def test_state_from_onnx_refuses_another_network(tmp_path: Path) -> None:
    import onnx

    from vision.export import export_onnx

    model, x = _trained_tiny(), torch.randn(1, 1, 8, 8)
    path = export_onnx(model, x, tmp_path / "tiny.onnx", ("images",), ("out",))
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="not recovered|graph weights"):
        state_from_onnx(other, onnx.load(str(path)), x)


def test_save_and_load_weights_round_trip(tmp_path: Path) -> None:
    model = _trained_tiny()
    saved = save_weights(model, tmp_path / "w.safetensors")
    assert saved["bytes"] == (tmp_path / "w.safetensors").stat().st_size
    again = load_weights(_Tiny(), tmp_path / "w.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def _input(name: str, batch: int = 2) -> np.ndarray:
    """A deterministic smooth image batch at the model's input size (no dataset needed)."""
    spec = load_config(MODELS / name).input
    yy, xx = np.mgrid[0 : spec.height, 0 : spec.width] / max(spec.height, spec.width)
    base = np.sin(9 * xx) * np.cos(7 * yy) + np.random.default_rng(0).normal(0, 0.2, xx.shape)
    image = np.stack([base * (1 + 0.3 * c) for c in range(spec.channels)])
    return np.stack([image * (1 + 0.1 * i) for i in range(batch)]).astype(np.float32)


def _torch_outputs(model, x: np.ndarray, names: list[str], flips: bool) -> dict[str, np.ndarray]:
    """The eager network's outputs named as the graph's; for a flip-TTA graph the mean over the
    four flips (`vision.segment.flip_tta.flip_back_mean`), which the served graph must equal."""

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(images))
        outs = out if isinstance(out, tuple) else (out,)
        return {n: o.numpy() for n, o in zip(names, outs, strict=True)}

    return flip_back_mean(run, x) if flips else run(x)


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_shipped_weights_pass_the_export_parity_gate(name: str) -> None:
    torch.set_num_threads(2)
    config = load_config(MODELS / name)
    model, x = load_bundled(name, MODELS), _input(name)
    served = MODELS / name / "1" / config.model_file
    session = OnnxModel(served)
    got = session.run({session.inputs[0].name: x})
    want = _torch_outputs(model, x, list(got), is_flip_graph(served))
    for (output, g), w in zip(got.items(), want.values(), strict=True):
        if config.task == "detection":  # boxes in input pixels, then scores
            box = float(np.abs(g[:, :4] - w[:, :4]).max())
            assert box <= BOX_RTOL * float(np.abs(w[:, :4]).max()), f"{name} boxes {box}"
            g, w = g[:, 4:], w[:, 4:]
        assert float(np.abs(g - w).max()) <= ATOL, f"{name} {output}"


@pytest.mark.parametrize("name", FLOAT_MODELS)
def test_randomisation_sanity_on_shipped_weights(name: str) -> None:
    from vision.xai.explain_graph import build_explain_module, example_inputs
    from vision.xai.sanity import randomisation_check

    torch.set_num_threads(2)
    config = load_config(MODELS / name)
    model = load_bundled(name, MODELS)
    explain = build_explain_module(
        model, config.explain.target_layer, config.task, config.explain.method
    )
    inputs = example_inputs(explain, torch.from_numpy(_input(name, 1)))
    result = randomisation_check(
        model,
        config.explain.target_layer,
        config.task,
        config.explain.method,
        [inputs],
        max_steps=2,
    )
    steps = result["steps"]
    assert len(steps) == 2 and steps[-1]["layers_randomised"] == len(result["layers"])
    assert steps[-1]["abs_spearman_mean"] < 0.9, f"{name}: CAM survives full randomisation"


def test_a_deep_copy_keeps_its_own_pooled_features() -> None:
    """The image head's hooks follow a deep copy (the randomisation check copies the model)."""
    import copy

    model = load_bundled("tile-defects", MODELS).eval()
    copied = copy.deepcopy(model)
    x = torch.from_numpy(_input("tile-defects", 1))
    with torch.no_grad():
        _, score = copied(x)
        _, original = model(x)
    assert torch.allclose(score, original)
    for module in (model, copied):
        for features in [m for m in module.modules() if hasattr(m, "_seen")]:
            assert features._seen == {}  # each forward consumed only its own features
