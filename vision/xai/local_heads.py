"""The detector's backward on windows: each head's on a crop around its target, the finest
level's lateral on those crops, and HiResCAM through the convolutions that read the target
layer (issue 19 item 4). Used by `vision.xai.shared_graph.SharedExplainModule`.

A class score at one cell depends on the neck feature (the input of ``smooth.l``) only within
`LOCAL_RADIUS` cells, so its gradient there is formed on a crop (`local_crop_grads`) and put
back in place (`place`), or straight onto a coarser grid (`place_coarse`); the FPN's nearest
upsampling gets a backward that ONNX Runtime runs fast (`WholeFactorNearest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.overrides import TorchFunctionMode


def one_hot(index: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """[K] int64 -> [K, size] by comparison (traces without data-dependent checks)."""
    return (torch.arange(size, device=index.device) == index[:, None]).to(dtype)


class WholeFactorNearest(TorchFunctionMode):
    """`F.interpolate(mode="nearest")` to a whole multiple of the input size with a backward
    that sums each cell's block (`_BlockNearest`). Traced as the model's own upsampling, the FPN's
    top-down sums' backward became a Transpose and a ScatterND over every one of the K
    gradients (blood-cells: about 2 ms of a 46 ms backward at 10 boxes, one thread)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func is F.interpolate:
            out = _block_nearest_or_none(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def _block_nearest_or_none(
    x: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest", **rest: Any
) -> Tensor | None:
    """Nearest upsampling of a 4-D `x` to `size`, a whole multiple of its size; else None."""
    if mode != "nearest" or size is None or scale_factor is not None or x.dim() != 4:
        return None
    if any(v not in (None, False) for v in rest.values()):
        return None
    out_h, out_w = (int(v) for v in (size if isinstance(size, (tuple, list)) else (size, size)))
    h, w = (int(v) for v in x.shape[-2:])
    if out_h % h or out_w % w:
        return None
    return _BlockNearest.apply(x, out_h // h, out_w // w)


class _BlockNearest(torch.autograd.Function):
    """Nearest upsampling by whole factors (fy, fx): forward the same op (exported as the plain
    model's Resize, so the forward part's outputs stay the plain model's bit for bit), backward
    the sum of each block as an average pool times its size (x4 and /4 are exact in floating
    point), one ONNX AveragePool that ONNX Runtime runs in its blocked layout. (A ReduceSum
    over the reshaped blocks' axes was slower than the ScatterND it replaced.)"""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, fy: int, fx: int) -> Tensor:  # noqa: D102
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(h * fy, w * fx), mode="nearest")  # the model's own op

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:  # noqa: D102
        ctx.factors = (inputs[1], inputs[2])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:  # noqa: D102
        fy, fx = ctx.factors
        return F.avg_pool2d(grad, (fy, fx)) * float(fy * fx), None, None


# Neck feature cells a class score at one cell depends on, each way: smooth.l's 3x3 convolution
# and the class branch's 3x3 one.
LOCAL_RADIUS = 2


def local_heads_apply(model: nn.Module, target_layers: list[nn.Module]) -> bool:
    """Whether `_forward_local` applies: the project's `Detector` layout (``lateral``,
    ``smooth``, ``heads`` with ``cls`` = 3x3 conv block + 1x1 conv) and target layers below the
    neck (none inside ``smooth`` or ``heads``, whose backward the local path does not form)."""
    needed = ("lateral", "smooth", "heads")
    if not all(isinstance(getattr(model, n, None), nn.ModuleList) for n in needed):
        return False
    above = {id(m) for n in ("smooth", "heads") for m in getattr(model, n).modules()}
    if any(id(layer) in above for layer in target_layers):
        return False
    pairs = zip(model.smooth, model.heads, strict=True)
    return all(_three_by_three(s) and _class_branch(h.cls) for s, h in pairs)


def _three_by_three(block: nn.Module) -> bool:
    """A `vision.detect.model.conv` block: 3x3 stride-1 padding-1 Conv2d first."""
    first = block[0] if isinstance(block, nn.Sequential) and len(block) else None
    return (
        isinstance(first, nn.Conv2d)
        and tuple(first.kernel_size) == (3, 3)
        and tuple(first.stride) == (1, 1)
        and tuple(first.padding) == (1, 1)
        and tuple(first.dilation) == (1, 1)
    )


def _class_branch(cls: nn.Module) -> bool:
    """``Sequential(conv block 3x3, Conv2d 1x1)``."""
    if not isinstance(cls, nn.Sequential) or len(cls) != 2 or not _three_by_three(cls[0]):
        return False
    last = cls[1]
    return isinstance(last, nn.Conv2d) and tuple(last.kernel_size) == (1, 1)


def local_neck_grads(
    model: nn.Module, feats: tuple[Tensor, ...], target_class: Tensor, target_anchor: Tensor
) -> list[Tensor]:
    """Per level, d(sigmoid class score of each target) / d(neck feature) [K, C, h, w].

    Each target is scored on a (2r+1)^2 crop of its level's feature around its cell (zero
    outside the map, as the 3x3 padding), with the smooth block's output zeroed outside the map
    (the class branch's padding); the crop gradient is put back at its place. Targets of other
    levels get zeros (their one-hot cotangent there is zero).
    """
    crops = local_crop_grads(model, feats, target_class, target_anchor)
    return [place(c.grad, c.ys, c.xs, c.height, c.width, LOCAL_RADIUS) for c in crops]


@dataclass
class CropGrad:
    """One level's local gradients: `grad` [K, C, s, s] on the crops whose cells are rows `ys`
    [K, s] and columns `xs` [K, s] of the level's map padded by `LOCAL_RADIUS` (`height` x
    `width` unpadded); crop cells outside the map count for nothing."""

    grad: Tensor
    ys: Tensor
    xs: Tensor
    height: int
    width: int


def local_crop_grads(
    model: nn.Module, feats: tuple[Tensor, ...], target_class: Tensor, target_anchor: Tensor
) -> list[CropGrad]:
    """`local_neck_grads` per level before the crops are put back in place."""
    r = LOCAL_RADIUS
    side = 2 * r + 1
    steps = torch.arange(side, device=target_anchor.device)
    offset = 0
    out = []
    for feat, smooth, head in zip(feats, model.smooth, model.heads, strict=True):
        h, w = int(feat.shape[-2]), int(feat.shape[-1])
        local = target_anchor - offset
        inside = ((local >= 0) & (local < h * w)).to(feat.dtype)
        local = local.clamp(0, h * w - 1)
        rows, cols = local // w, local % w
        ys = rows[:, None] + steps  # in the padded map
        xs = cols[:, None] + steps
        crops = crop_at(feat.detach(), ys, xs)
        valid = _inside(ys - r, h)[:, :, None] * _inside(xs - r, w)[:, None, :]
        valid = valid.to(feat.dtype)[:, None]

        def score(c: Tensor, smooth=smooth, head=head, valid=valid) -> Tensor:
            s = smooth(c) * valid
            v = head.cls[0](s)[:, :, r : r + 1, r : r + 1]
            return head.cls[1](v).flatten(1).sigmoid()

        logits, pull = torch.func.vjp(score, crops)
        onehot = one_hot(target_class, logits.shape[1], feat.dtype) * inside[:, None]
        (grad,) = pull(onehot)
        out.append(CropGrad(grad, ys, xs, h, w))
        offset += h * w
    return out


def crop_at(image_map: Tensor, ys: Tensor, xs: Tensor, pad: int = LOCAL_RADIUS) -> Tensor:
    """[1, C, h, w] -> [K, C, s, s]: the crops at rows `ys` and columns `xs` [K, s] of the map
    padded by `pad` with zeros."""
    padded = F.pad(image_map[0], (pad, pad, pad, pad))
    return padded[:, ys[:, :, None], xs[:, None, :]].permute(1, 0, 2, 3)


def tap_cam(activation: Tensor, conv: nn.Conv2d, grad: Tensor) -> Tensor:
    """HiResCAM sum_c A_c * dS/dA_c [K, H, W] of the part of dS/dA that flows through `conv`,
    from dS/d(conv output) `grad` [K, D, h, w], without forming dS/dA.

    dS/dA = conv^T(grad), so sum_c A_c (conv^T grad)_c at x = sum over kernel taps t and output
    cells o with s*o + t - p = x of sum_d grad_d(o) * (W[d, :, t] . A(x)): each tap's
    contribution of A (a strided 1x1 convolution, once for the image) dotted with the K
    gradients (`_tap_dots`), then put back at x by a transposed convolution with one-hot
    kernels (taps in, one map out). The (K x D x C) transposed convolution of the gradient is
    not needed: ONNX Runtime runs a stride-2 one several times slower than all of this
    (blood-cells at 10 boxes, one thread: 8.8 ms against about 2). Nor are ordinary
    convolutions per output phase, each with the kernel taps that reach it: the same sums,
    2.7 ms slower at 10 boxes than the per-tap products this replaced.
    """
    weight = conv.weight
    kh, kw = weight.shape[-2:]
    sy, sx = conv.stride
    py, px = conv.padding
    h, w = grad.shape[-2:]
    padded = F.pad(activation, (px, px, py, py))
    if kh * kw == 1:
        part = F.conv2d(padded[:, :, : sy * (h - 1) + 1 : sy, : sx * (w - 1) + 1 : sx], weight)
        dots = (grad * part).sum(1, keepdim=True)  # [K, 1, h, w]
    else:
        dots = _tap_dots(padded[0].permute(1, 2, 0), weight, grad, (sy, sx))
    onehot = torch.eye(kh * kw, dtype=grad.dtype, device=grad.device).reshape(kh * kw, 1, kh, kw)
    height, width = activation.shape[-2:]
    extra = (
        height - ((h - 1) * sy - 2 * py + kh),
        width - ((w - 1) * sx - 2 * px + kw),
    )
    placed = F.conv_transpose2d(
        dots, onehot, stride=(sy, sx), padding=(py, px), output_padding=extra
    )
    return placed[:, 0]


def _tap_dots(hwc: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, int]) -> Tensor:
    """[K, taps, h, w]: per output cell o and tap t, sum_d grad[k, d, o] * (W[d, :, t] . A at
    the tap's cell), as one batched matrix product over the cells ([K, D] x [D, taps] each).

    The taps' parts ([cells, taps, D]) are made from the padded activation in HWC order
    (`hwc`, [H + 2p, W + 2p, C], once for the image): per tap a strided slice times
    W[:, :, t]^T, stacked on the taps' axis, whole rows of D at a time (stacked on the last
    axis instead, the image-only stack took 1.5 ms of blood-cells' 20 ms forward part). The K
    gradients move their cell axis to the front (ONNX Runtime's transpose that moves one axis
    is fast; one that reverses three was 5.6 ms); the parts enter the product transposed,
    which ONNX Runtime folds into it (the split leaves that transpose to the backward part,
    `split_graph.cut_points`). Nine products and sums over [K, D, h, w], one per tap, were
    about 4 ms at 10 boxes for blood-cells."""
    k, d, h, w = grad.shape
    kh, kw = weight.shape[-2:]
    sy, sx = stride
    parts = []
    for ty in range(kh):
        for tx in range(kw):
            sample = hwc[ty : ty + sy * (h - 1) + 1 : sy, tx : tx + sx * (w - 1) + 1 : sx]
            parts.append(sample.reshape(h * w, -1) @ weight[:, :, ty, tx].t())  # [cells, D]
    per_tap = torch.stack(parts, 1)  # [cells, taps, D], image only
    per_cell = grad.reshape(k, d, h * w).permute(2, 0, 1)  # [cells, K, D]
    dots = torch.bmm(per_cell, per_tap.transpose(1, 2))  # [cells, K, taps]
    return dots.permute(1, 2, 0).reshape(k, kh * kw, h, w)


def _inside(index: Tensor, size: int) -> Tensor:
    return (index >= 0) & (index < size)


def place(grad: Tensor, ys: Tensor, xs: Tensor, h: int, w: int, r: int) -> Tensor:
    """Crops [K, C, s, s] at (ys, xs) of the r-padded map -> [K, C, h, w] (zeros elsewhere).

    Placed by a product with one-hot rows (a crop cell outside the map, in the padding, has an
    all-zero row), which ONNX Runtime runs faster than zero-filling and scattering.
    """
    return _put(grad, ys - r, xs - r, (h, w), (1, 1))


def finest_cam(conv: nn.Conv2d, output: Tensor, crop: CropGrad) -> Tensor:
    """The finest lateral's share of the HiResCAM [K, h, w] from its crops' gradient (with
    respect to the block's output, SiLU(conv(A))): per cell, sum over channels of the gradient
    times conv(A) without its bias (`tap_cam`'s one tap) times SiLU' at `output` = conv(A)."""
    sig = torch.sigmoid(output)
    part = output if conv.bias is None else output - conv.bias.reshape(1, -1, 1, 1)
    factor = part * (sig * (1 + output * (1 - sig)))  # image only: [1, D, h, w]
    dots = (crop.grad * crop_at(factor, crop.ys, crop.xs)).sum(1, keepdim=True)
    return place(dots, crop.ys, crop.xs, crop.height, crop.width, LOCAL_RADIUS)[:, 0]


def place_coarse(crop: CropGrad, fy: int, fx: int) -> Tensor:
    """The crops put back on a grid `fy` x `fx` times coarser and summed there: the adjoint of
    nearest upsampling (by whole factors) applied to `place`'s map, without forming it.
    -> [K, C, height / fy, width / fx]."""
    r = LOCAL_RADIUS
    return _put(crop.grad, crop.ys - r, crop.xs - r, (crop.height, crop.width), (fy, fx))


def _put(
    grad: Tensor, ys: Tensor, xs: Tensor, size: tuple[int, int], factors: tuple[int, int]
) -> Tensor:
    """Crops [K, C, s, s] whose cells are rows `ys` and columns `xs` [K, s] of an h x w map
    (`size`; cells outside it count for nothing), summed onto the grid `factors` times coarser:
    a product with one-hot rows. -> [K, C, h / fy, w / fx]."""
    k, c, side, _ = grad.shape
    (h, w), (fy, fx) = size, factors
    valid = (_inside(ys, h)[:, :, None] & _inside(xs, w)[:, None, :]).reshape(k, -1, 1)
    rows = ys if fy == 1 else ys // fy
    cols = xs if fx == 1 else xs // fx
    hc, wc = h // fy, w // fx
    flat = (rows[:, :, None] * wc + cols[:, None, :]).reshape(k, side * side, 1)
    cells = torch.arange(hc * wc, device=grad.device)
    onehot = ((cells == flat) & valid).to(grad.dtype)  # [K, s*s, hc*wc]
    return torch.bmm(grad.reshape(k, c, side * side), onehot).reshape(k, c, hc, wc)
