"""The detector's backward on windows (`vision.xai.local_heads`, issue 19 item 4).

The finest level's lateral is handled on the targets' crops and the FPN's nearest upsampling
gets a block-sum backward; both must give the same CAMs and gradients as the dense backward
they replace, for targets at every level, and must step aside where they do not apply.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from vision.detect.model import DetectorSpec, build_model
from vision.xai.explain_graph import build_explain_module
from vision.xai.local_heads import LOCAL_RADIUS, CropGrad, WholeFactorNearest, place, place_coarse
from vision.xai.shared_graph import SharedExplainModule

SPEC = DetectorSpec(in_channels=1, num_classes=2, widths=(8, 16, 16, 16), neck=16)


def _module() -> SharedExplainModule:
    torch.manual_seed(0)
    model = build_model(SPEC)
    return SharedExplainModule(
        build_explain_module(model, "backbone.stages.0", "detection", "hirescam")
    )


def test_finest_level_on_crops_gives_the_dense_backward_cams() -> None:
    module = _module()
    images = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    module.prepare(images)
    readers = module._consumer_convs(images)[0]
    assert module._finest_lateral(readers) is module.model.lateral[0][0]
    anchors = torch.tensor([0, 9, 63, 64, 70, 79, 80, 83])  # levels 8x8, 4x4, 2x2; edges too
    classes = torch.tensor([0, 1, 1, 0, 1, 0, 1, 0])
    got = module(images, classes, anchors)
    module._finest_factors = None  # the dense backward below the neck, as before
    want = module(images, classes, anchors)
    scale = float(want[-1].detach().abs().max())
    assert scale > 0
    torch.testing.assert_close(got[-1], want[-1], rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)


def test_levels_that_are_not_whole_multiples_keep_the_dense_backward() -> None:
    module = _module()
    images = torch.rand(1, 1, 72, 72)  # levels 9, 5, 3: 9 is not a multiple of 5
    module.prepare(images)
    assert module._finest_factors is None
    assert module._finest_lateral(module._consumer_convs(images)[0]) is None


@pytest.mark.parametrize(("size", "whole"), [((10, 21), True), ((9, 14), False)])
def test_nearest_upsampling_keeps_its_values_and_gradient(size: tuple, whole: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 7, generator=gen, requires_grad=True)
    cotangents = torch.randn(4, 2, 3, *size, generator=gen)
    with WholeFactorNearest():
        y, pull = torch.func.vjp(lambda t: F.interpolate(t, size=size, mode="nearest"), x)
    y_ref, pull_ref = torch.func.vjp(lambda t: F.interpolate(t, size=size, mode="nearest"), x)
    assert torch.equal(y, y_ref)
    (got,) = torch.func.vmap(pull)(cotangents)
    (want,) = torch.func.vmap(pull_ref)(cotangents)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    with WholeFactorNearest():
        out = F.interpolate(x, size=size, mode="nearest")
    assert ("_BlockNearest" in type(out.grad_fn).__name__) is whole


def test_crops_placed_on_the_coarser_grid_sum_like_the_upsampling_adjoint() -> None:
    gen = torch.Generator().manual_seed(3)
    side, h, w = 2 * LOCAL_RADIUS + 1, 8, 6
    rows = torch.tensor([0, 3, 7])  # crop centres, in the map; the crops leave it at the edges
    cols = torch.tensor([5, 0, 2])
    steps = torch.arange(side)
    ys, xs = rows[:, None] + steps, cols[:, None] + steps  # in the padded map
    crop = CropGrad(torch.randn(3, 4, side, side, generator=gen), ys, xs, h, w)
    fine = place(crop.grad, ys, xs, h, w, LOCAL_RADIUS)  # [K, C, 8, 6]
    want = fine.reshape(3, 4, h // 2, 2, w // 2, 2).sum((3, 5))
    torch.testing.assert_close(place_coarse(crop, 2, 2), want, rtol=1e-6, atol=1e-6)
