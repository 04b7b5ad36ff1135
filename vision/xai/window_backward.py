"""The coarsest backbone stage's backward on a window around each target (issue 19 item 4).

A target's gradient at the coarsest neck level (stride 32) lies within `LOCAL_RADIUS` cells
of its own cell there (its head's crop, or the top-down sums' block sums of a finer target's
crop), so through that level's lateral (1x1) and the last stage's C2f (two 3x3 convolutions)
it stays within `WINDOW_RADIUS` cells. `coarsest_stage_grads` forms that backward on a window
of (2 * WINDOW_RADIUS + 1)^2 cells per target, by hand (the stage is the project's
`vision.detect.model` layout: a strided conv block, then a C2f with one bottleneck; checked by
`coarsest_layout`), with SiLU's derivatives taken from the forward pass, and puts the
stage's input gradient, (2 * 9 + 1)^2 cells at stride 16, back in place (`put`). On
blood-cells' 13 x 13 level the window is half the map; on pcb-defects' 20 x 20, a fifth.

Cells outside the map: the windows' crops of the image-only SiLU' are zero there (cropped from
the zero-padded map), so no gradient passes through them, as the map's zero padding does; the
one-hot rows of the gradient's crop and of `put` have no cell there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from vision.xai.local_heads import LOCAL_RADIUS, crop_at

# The coarsest level's window, each way from the target's cell there: the head crop's radius
# and the C2f bottleneck's two 3x3 convolutions.
WINDOW_RADIUS = LOCAL_RADIUS + 2


@dataclass
class CoarsestLayout:
    """The convolutions of the last backbone stage and of the coarsest lateral, each followed
    by (identities and) a SiLU: the strided 3x3 `down`, the C2f's `cv1`, bottleneck `b1`, `b2`
    and `cv2`, and `lateral`."""

    stage: nn.Module
    down: nn.Conv2d
    cv1: nn.Conv2d
    b1: nn.Conv2d
    b2: nn.Conv2d
    cv2: nn.Conv2d
    lateral: nn.Conv2d

    def convs(self) -> dict[str, nn.Conv2d]:
        """The six convolutions by name (the order their pre-activations are recorded in)."""
        names = ("down", "cv1", "b1", "b2", "cv2", "lateral")
        return {n: getattr(self, n) for n in names}


def coarsest_layout(model: nn.Module) -> CoarsestLayout | None:
    """The layout `coarsest_stage_grads` needs, or None: three laterals, the last backbone
    stage ``Sequential(conv block 3x3 stride 2 padding 1, C2f with one bottleneck)`` and the
    coarsest lateral a 1x1 conv block. That only this lateral reads the stage's output is the
    `vision.detect.model.Detector` layout (`local_heads_apply` checks it is that layout); the
    export's parity gate, against the eager backward and pytorch-grad-cam, would fail a model
    where it is not."""
    backbone = getattr(model, "backbone", None)
    stages = getattr(backbone, "stages", None)
    lateral = getattr(model, "lateral", None)
    if stages is None or lateral is None or len(lateral) != 3:
        return None
    if getattr(backbone, "depth", None) != len(stages) or len(stages) < 3:
        return None
    stage = stages[-1]
    if not isinstance(stage, nn.Sequential) or len(stage) != 2:
        return None
    c2f = stage[1]
    blocks = getattr(c2f, "blocks", None)
    if blocks is None or len(blocks) != 1 or not hasattr(c2f, "cv1"):
        return None
    body = getattr(blocks[0], "body", None)
    if not isinstance(body, nn.Sequential) or len(body) != 2:
        return None
    found = [
        _block_conv(stage[0], 3, 2),
        _block_conv(c2f.cv1, 1, 1),
        _block_conv(body[0], 3, 1),
        _block_conv(body[1], 3, 1),
        _block_conv(getattr(c2f, "cv2", None), 1, 1),
        _block_conv(lateral[-1], 1, 1),
    ]
    if any(c is None for c in found):
        return None
    return CoarsestLayout(stage, *found)


def _block_conv(block: nn.Module | None, kernel: int, stride: int) -> nn.Conv2d | None:
    """The Conv2d of a ``Sequential(Conv2d, identities..., SiLU)`` block with this square
    kernel and stride (padding kernel // 2, ungrouped, undilated), else None."""
    if not isinstance(block, nn.Sequential) or len(block) < 2:
        return None
    conv, tail = block[0], list(block)[1:]
    if not isinstance(tail[-1], nn.SiLU) or not all(isinstance(m, nn.Identity) for m in tail[:-1]):
        return None
    ok = (
        isinstance(conv, nn.Conv2d)
        and tuple(conv.kernel_size) == (kernel, kernel)
        and tuple(conv.stride) == (stride, stride)
        and tuple(conv.padding) == (kernel // 2, kernel // 2)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )
    return conv if ok else None


def silu_grad(z: Tensor) -> Tensor:
    """d SiLU(z) / dz."""
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def window_rows(first: Tensor, side: int, size: int, dtype: torch.dtype) -> Tensor:
    """[K, side, size] one-hot rows of the window cells first .. first + side - 1 (a cell
    outside 0 .. size - 1 has an all-zero row)."""
    cells = first[:, None] + torch.arange(side, device=first.device)
    return (cells[:, :, None] == torch.arange(size, device=first.device)).to(dtype)


def crop_image(image_map: Tensor, first: tuple[Tensor, Tensor], side: int, pad: int) -> Tensor:
    """[1, C, H, W] -> [K, C, side, side]: the windows from rows / cols `first` [K] on (at
    least -`pad`, at most H + pad - side), zero outside the map (`crop_at` of the map padded
    by `pad`)."""
    ys, xs = (f[:, None] + pad + torch.arange(side, device=f.device) for f in first)
    return crop_at(image_map, ys, xs, pad)


def crop_each(maps: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """[K, C, H, W] -> [K, C, s, s]: map k's window by one-hot `rows` [K, s, H] and `cols`
    [K, s, W] (`window_rows`)."""
    return rows[:, None] @ maps @ cols[:, None].transpose(-1, -2)


def put(window: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """[K, C, s, s] windows -> [K, C, H, W] maps (zeros elsewhere) by one-hot `rows` [K, s, H]
    and `cols` [K, s, W]: the rows by a product per target and channel, then the columns by one
    product per target over all channels and rows at once, so that the result is in place
    without a transpose (ONNX Runtime's [K, H, C, W] -> [K, C, H, W] was 2.8 ms of pcb-defects'
    backward at 10 boxes, one thread)."""
    k, c, s, _ = window.shape
    h, w = rows.shape[-1], cols.shape[-1]
    down = rows.transpose(1, 2)[:, None].expand(k, c, h, s) @ window  # [K, C, H, s]
    return torch.bmm(down.reshape(k, c * h, s), cols).reshape(k, c, h, w)


def level_cells(anchor: Tensor, sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Each target's (rows, cols) [K] at the coarsest level: its own cell there, or the cell
    over its cell at a finer level. `anchor`: indices into the levels' cells, finest first;
    `sizes`: each level's (h, w), each a whole multiple of the last."""
    rows = torch.zeros_like(anchor)
    cols = torch.zeros_like(anchor)
    hc, wc = sizes[-1]
    offset = 0
    for h, w in sizes:
        local = anchor - offset
        inside = (local >= 0) & (local < h * w)
        local = local.clamp(0, h * w - 1)
        rows = torch.where(inside, (local // w) // (h // hc), rows)
        cols = torch.where(inside, (local % w) // (w // wc), cols)
        offset += h * w
    return rows, cols


def coarsest_stage_grads(
    layout: CoarsestLayout,
    factors: dict[str, Tensor],
    grad: Tensor,
    centre: tuple[Tensor, Tensor],
    fine_size: tuple[int, int],
) -> Tensor:
    """d(score) / d(input of the last stage) [K, C, h, w] of the K targets from their gradient
    at the coarsest neck level `grad` [K, D, h2, w2] (zero outside each target's window), on
    windows of `WINDOW_RADIUS` around `centre` (rows, cols [K] at stride 32). `factors`: SiLU'
    at each convolution's output for the image ([1, ., h2, w2], `layout.convs()` names)."""
    r, side, dtype = WINDOW_RADIUS, 2 * WINDOW_RADIUS + 1, grad.dtype
    first = (centre[0] - r, centre[1] - r)
    at = {name: crop_image(f, first, side, r) for name, f in factors.items()}
    h2, w2 = (int(v) for v in grad.shape[-2:])
    rows, cols = window_rows(first[0], side, h2, dtype), window_rows(first[1], side, w2, dtype)
    g = _conv1x1_t(crop_each(grad, rows, cols) * at["lateral"], layout.lateral)
    g_cat = _conv1x1_t(g * at["cv2"], layout.cv2)
    half = layout.b1.in_channels
    g_y0, g_y1, g_y2 = g_cat[:, :half], g_cat[:, half : 2 * half], g_cat[:, 2 * half :]
    g_t = _conv3x3_t(g_y2 * at["b2"], layout.b2)
    g_y1 = g_y1 + g_y2 + _conv3x3_t(g_t * at["b1"], layout.b1)
    g_down = _conv1x1_t(torch.cat([g_y0, g_y1], 1) * at["cv1"], layout.cv1)
    g_in = F.conv_transpose2d(g_down * at["down"], layout.down.weight, stride=2)
    # The strided 3x3 convolution's transpose (padding 1) writes 2 * side + 1 cells at the
    # finer stride from the window's first cell there, 2 * (centre - r) - 1.
    fine_rows = window_rows(2 * (centre[0] - r) - 1, 2 * side + 1, fine_size[0], dtype)
    fine_cols = window_rows(2 * (centre[1] - r) - 1, 2 * side + 1, fine_size[1], dtype)
    return put(g_in, fine_rows, fine_cols)


def _conv1x1_t(grad: Tensor, conv: nn.Conv2d) -> Tensor:
    """The 1x1 convolution's input gradient: its weight transposed, as a convolution."""
    return F.conv2d(grad, conv.weight.transpose(0, 1))


def _conv3x3_t(grad: Tensor, conv: nn.Conv2d) -> Tensor:
    """A 3x3 stride-1 padding-1 convolution's input gradient as an ordinary convolution (the
    kernel flipped and transposed; ONNX Runtime runs it faster than a ConvTranspose)."""
    return F.conv2d(grad, conv.weight.flip(2, 3).transpose(0, 1), padding=1)
