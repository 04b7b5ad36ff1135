"""Flip TTA in the ONNX graph (vision.segment.flip_tta): the wrapped graph is the mean over the
four flips of the single graph, spatial outputs flipped back and scores averaged as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from torch import nn  # noqa: E402

from vision.export import export_onnx  # noqa: E402
from vision.runtime import OnnxModel  # noqa: E402
from vision.segment.flip_tta import (  # noqa: E402
    check_flips,
    flip_back_mean,
    flip_graph,
    is_flip_graph,
)


class _Lopsided(nn.Module):
    """Logits that depend on where things are (a ramp is added), and a score from their mean:
    a flip changes both, so an unflipped or unaveraged graph gives other numbers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.register_buffer("ramp", torch.linspace(0, 1, 16).repeat(16, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.conv(x) + self.ramp * x
        return logits, torch.sigmoid(logits[:, 1].mean(dim=(1, 2)))


def _export(tmp_path: Path) -> Path:
    example = torch.randn(1, 1, 16, 16)
    return export_onnx(
        _Lopsided().eval(), example, tmp_path / "single.onnx", ("images",), ("logits", "score")
    )


def test_the_flip_graph_is_the_mean_over_flips(tmp_path: Path) -> None:
    single = _export(tmp_path)
    wrapped = tmp_path / "flip4.onnx"
    onnx.save(flip_graph(onnx.load(str(single))), str(wrapped))
    assert is_flip_graph(wrapped) and not is_flip_graph(single)
    assert check_flips(single, wrapped) <= 1e-5
    plain, tta = OnnxModel(single), OnnxModel(wrapped)
    x = np.random.default_rng(1).standard_normal((3, 1, 16, 16)).astype(np.float32)
    got = tta.run({"images": x})
    want = flip_back_mean(lambda b: plain.run({"images": b}), x)
    assert got["logits"].shape == (3, 2, 16, 16) and got["score"].shape == (3,)
    for name in ("logits", "score"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    once = plain.run({"images": x})
    assert np.abs(got["logits"] - once["logits"]).max() > 1e-2  # the flips changed something


def test_flip_graph_refuses_what_it_cannot_wrap(tmp_path: Path) -> None:
    single = onnx.load(str(_export(tmp_path)))
    old = onnx.load(str(_export(tmp_path)))
    old.opset_import[0].version = 17
    with pytest.raises(ValueError, match="opset 17"):
        flip_graph(old)
    single.graph.input.append(single.graph.input[0])
    with pytest.raises(ValueError, match="one"):
        flip_graph(single)
