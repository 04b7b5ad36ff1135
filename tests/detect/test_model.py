"""The detector's output layout, the assigner and a few optimisation steps on synthetic data."""

from __future__ import annotations

import pytest
import torch

from vision.detect.loss import assign, detection_loss
from vision.detect.model import DetectorSpec, build_model

SPEC = DetectorSpec(in_channels=1, num_classes=2, widths=(8, 16, 16, 16), neck=16)


def test_export_layout_is_yolov8() -> None:
    model = build_model(SPEC).eval()
    model.export_mode = True
    with torch.no_grad():
        out = model(torch.rand(2, 1, 64, 96))
    anchors = sum((64 // s) * (96 // s) for s in SPEC.strides)
    assert out.shape == (2, 4 + 2, anchors)
    assert (out[:, 4:] >= 0).all() and (out[:, 4:] <= 1).all()
    assert (out[:, 2:4] > 0).all()  # widths and heights


def test_assign_picks_anchors_inside_the_box() -> None:
    anchors = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 20.0]])
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0], [0.0, 0.0, 4.0, 4.0]])
    scores = torch.full((3, 2), 0.5)
    fg, target_boxes, target_scores = assign(
        scores, boxes, anchors, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([1])
    )
    assert fg.tolist() == [True, False, False]
    assert target_scores[0, 1] > 0 and target_scores[0, 0] == 0
    assert torch.equal(target_boxes[0], torch.tensor([0.0, 0.0, 10.0, 10.0]))


def test_loss_decreases() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC)
    images = torch.zeros(2, 1, 64, 64)
    images[:, :, 16:40, 8:30] = 1.0
    targets = [torch.tensor([[1.0, 8.0, 16.0, 30.0, 40.0]])] * 2
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(12):
        loss, _ = detection_loss(*model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_resolve_recipe_named_generic_and_overrides(tmp_path) -> None:
    from vision.detect.recipes import resolve_recipe
    from vision.errors import ConfigError

    recipe = resolve_recipe("blood-cells", size=320, epochs=3, lr=None)
    assert (recipe.height, recipe.width, recipe.epochs) == (320, 320, 3)
    assert recipe.lr == resolve_recipe("blood-cells").lr
    generic = resolve_recipe(fmt="voc", data=tmp_path, name="mine")
    assert generic.name == "mine" and generic.data == str(tmp_path.resolve())
    with pytest.raises(ConfigError, match="unknown recipe"):
        resolve_recipe("nope")
    with pytest.raises(ConfigError, match="cannot be overridden"):
        resolve_recipe("blood-cells", strides=(8,))
