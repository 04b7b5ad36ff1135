"""The last backbone stage's backward on a window around each target
(`vision.xai.window_backward`, issue 19 item 4): the same CAMs as the backward it replaces, for
targets at every level and at the map's edges, and it steps aside where it does not apply."""

from __future__ import annotations

import torch
from torch import nn

from vision.detect.model import DetectorSpec, build_model
from vision.xai.explain_graph import build_explain_module
from vision.xai.shared_graph import SharedExplainModule
from vision.xai.window_backward import (
    WINDOW_RADIUS,
    coarsest_stage_grads,
    crop_each,
    put,
    silu_grad,
    window_rows,
)

SPEC = DetectorSpec(in_channels=1, num_classes=2, widths=(8, 16, 16, 16), neck=16)


def _module() -> SharedExplainModule:
    """A tiny detector with BatchNorms that are not identities (folded into the convolutions,
    as in the bundled graphs)."""
    torch.manual_seed(0)
    model = build_model(SPEC)
    gen = torch.Generator().manual_seed(4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.3, generator=gen)
    model.eval()
    return SharedExplainModule(
        build_explain_module(model, "backbone.stages.0", "detection", "hirescam")
    )


def test_windowed_last_stage_gives_the_dense_backward_cams() -> None:
    """416 x 416: levels 52, 26 and 13 cells, so a 9-cell window is smaller than the coarsest
    level; targets at every level, at corners, edges and inside. The windowed CAMs equal those
    of the backward without windows (`_coarsest` cleared), and the outputs are the same."""
    module = _module()
    images = torch.rand(1, 1, 416, 416, generator=torch.Generator().manual_seed(1))
    module.prepare(images)
    assert module._coarsest is not None and 2 * WINDOW_RADIUS + 1 < 13
    n0, n1, n2 = 52 * 52, 26 * 26, 13 * 13
    anchors = torch.tensor(
        [0, 52 * 26 + 30, n0 - 1, n0, n0 + 26 * 5 + 20, n0 + n1 - 1, n0 + n1, n0 + n1 + 84]
        + [n0 + n1 + n2 - 1, n0 + n1 + 12, 51]
    )
    classes = torch.tensor([0, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0])
    got = module(images, classes, anchors)
    module._coarsest = None
    want = module(images, classes, anchors)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    for k in range(len(anchors)):  # each target's map, at its own scale
        scale = float(want[-1][k].detach().abs().max())
        assert scale > 0
        torch.testing.assert_close(got[-1][k], want[-1][k], rtol=0, atol=1e-5 * scale)


def test_small_levels_and_other_layouts_keep_the_backward_without_windows() -> None:
    """Levels that are not twice the next (72 px: 9, 5, 3 cells) keep the earlier path; a
    64 px image (8, 4, 2 cells: the window covers the whole coarsest level) takes it."""
    module = _module()
    module.prepare(torch.rand(1, 1, 72, 72))
    assert module._coarsest is None
    module = _module()
    module.prepare(torch.rand(1, 1, 64, 64))
    assert module._coarsest is not None


def test_stage_window_gradient_equals_autograd_at_the_edges() -> None:
    """The hand-written backward of the last stage and the coarsest lateral on windows against
    autograd of the same modules, for a cotangent that lies within each target's window (one
    target at a corner, one inside), on a 13 x 13 coarsest level."""
    module = _module()
    module.prepare(torch.rand(1, 1, 416, 416))
    layout, model = module._coarsest, module.model
    gen = torch.Generator().manual_seed(5)
    stage_in = torch.randn(1, 16, 26, 26, generator=gen, requires_grad=True)
    zs: dict[str, torch.Tensor] = {}
    hooks = [
        conv.register_forward_hook(lambda _m, _a, out, n=name: zs.__setitem__(n, out.detach()))
        for name, conv in layout.convs().items()
    ]
    out = model.lateral[2](layout.stage(stage_in))
    for hook in hooks:
        hook.remove()
    centre = (torch.tensor([0, 7]), torch.tensor([12, 5]))
    r = 2  # the head crop's radius: inside the window, as the explain graph's cotangents are
    cotangent = torch.zeros(2, *out.shape[1:])
    for k in range(2):
        y, x = int(centre[0][k]), int(centre[1][k])
        patch = torch.randn(16, 2 * r + 1, 2 * r + 1, generator=gen)
        rows = slice(max(y - r, 0), y + r + 1)
        cols = slice(max(x - r, 0), min(x + r + 1, 13))
        cotangent[k, :, rows, cols] = patch[:, : rows.stop - rows.start, : cols.stop - cols.start]
    want = torch.stack(
        [torch.autograd.grad(out, stage_in, c[None], retain_graph=True)[0][0] for c in cotangent]
    )
    factors = {name: silu_grad(z) for name, z in zs.items()}
    got = coarsest_stage_grads(layout, factors, cotangent, centre, (26, 26))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))


def test_put_is_the_adjoint_of_the_crop() -> None:
    """<put(w), m> = <w, crop(m)> for windows that leave the map at every side."""
    gen = torch.Generator().manual_seed(6)
    first = (torch.tensor([-3, 0, 5]), torch.tensor([4, -2, 6]))
    side, h, w = 7, 10, 11
    rows = window_rows(first[0], side, h, torch.float32)
    cols = window_rows(first[1], side, w, torch.float32)
    windows = torch.randn(3, 2, side, side, generator=gen)
    maps = torch.randn(3, 2, h, w, generator=gen)
    lhs = (put(windows, rows, cols) * maps).sum()
    rhs = (windows * crop_each(maps, rows, cols)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-5)
    placed = put(torch.ones(3, 1, side, side), rows, cols)
    assert float(placed[0, 0, :4].sum()) == 4 * 7  # rows 0..3 of the window from -3
