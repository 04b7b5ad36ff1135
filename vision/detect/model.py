"""A small anchor-free one-stage detector (YOLOv8-style decoupled heads, FPN neck).

Training mode returns per-anchor class logits, decoded boxes and anchor points; export mode
returns the YOLOv8 layout [N, 4 + nc, A]: cx, cy, w, h in input pixels, then sigmoid scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn


@dataclass(frozen=True)
class DetectorSpec:
    """Architecture hyper-parameters (saved in checkpoints)."""

    in_channels: int = 3
    num_classes: int = 3
    widths: tuple[int, ...] = (32, 64, 128, 192)  # stride 4, 8, 16, 32
    neck: int = 64
    strides: tuple[int, ...] = (8, 16, 32)

    def to_dict(self) -> dict:
        """The spec as a plain dict."""
        return asdict(self)


def conv(c1: int, c2: int, k: int = 3, s: int = 1) -> nn.Sequential:
    """Conv + BN + SiLU."""
    return nn.Sequential(
        nn.Conv2d(c1, c2, k, s, k // 2 if k % 2 else 0, bias=False), nn.BatchNorm2d(c2), nn.SiLU()
    )


class Bottleneck(nn.Module):
    """Residual block: x + two 3x3 conv blocks."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(c, c), conv(c, c))

    def forward(self, x: Tensor) -> Tensor:
        """Add the two-conv body's output to `x`."""
        return x + self.body(x)


class C2f(nn.Module):
    """CSP block: split, run bottlenecks on one half, concatenate every stage, fuse."""

    def __init__(self, c: int, n: int = 1) -> None:
        super().__init__()
        self.cv1 = conv(c, c, 1)
        self.blocks = nn.ModuleList(Bottleneck(c // 2) for _ in range(n))
        self.cv2 = conv(c // 2 * (2 + n), c, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Split into halves, chain the bottlenecks on the second, fuse all stages."""
        ys = list(self.cv1(x).chunk(2, 1))
        for block in self.blocks:
            ys.append(block(ys[-1]))
        return self.cv2(torch.cat(ys, 1))


class Backbone(nn.Module):
    """Patchify stem to stride 4, then stride-2 stages; returns maps at the requested strides."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv(in_channels, widths[0], 4, 4), conv(widths[0], widths[0]))
        self.stages = nn.ModuleList(
            nn.Sequential(conv(widths[i], widths[i + 1], 3, 2), C2f(widths[i + 1]))
            for i in range(len(widths) - 1)
        )
        self.keep = {int(math.log2(s)) - 3 for s in strides}  # stage index of each stride
        self.depth = max(self.keep) + 1

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps of the kept stages, finest stride first."""
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages[: self.depth]):
            x = stage(x)
            if i in self.keep:
                outs.append(x)
        return outs


class Head(nn.Module):
    """Decoupled class / box branches for one level."""

    def __init__(self, c: int, num_classes: int, stride: int) -> None:
        super().__init__()
        self.cls = nn.Sequential(conv(c, c), nn.Conv2d(c, num_classes, 1))
        self.box = nn.Sequential(conv(c, c), nn.Conv2d(c, 4, 1))
        nn.init.constant_(self.cls[-1].bias, -math.log((1 - 0.01) / 0.01))
        nn.init.constant_(self.box[-1].bias, 0.5)
        self.stride = stride

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits and raw box distances of one feature map."""
        return self.cls(x), self.box(x)


class Detector(nn.Module):
    """Backbone + top-down FPN + one head per stride."""

    def __init__(self, spec: DetectorSpec) -> None:
        super().__init__()
        self.spec = spec
        self.export_mode = False
        self.backbone = Backbone(spec.in_channels, spec.widths, spec.strides)
        chans = [spec.widths[int(math.log2(s)) - 2] for s in spec.strides]
        self.lateral = nn.ModuleList(conv(c, spec.neck, 1) for c in chans)
        self.smooth = nn.ModuleList(conv(spec.neck, spec.neck) for _ in chans)
        self.heads = nn.ModuleList(Head(spec.neck, spec.num_classes, s) for s in spec.strides)

    def _levels(self, x: Tensor) -> list[Tensor]:
        feats = [lat(f) for lat, f in zip(self.lateral, self.backbone(x), strict=True)]
        for i in range(len(feats) - 2, -1, -1):
            feats[i] = feats[i] + F.interpolate(
                feats[i + 1], size=feats[i].shape[-2:], mode="nearest"
            )
        return [sm(f) for sm, f in zip(self.smooth, feats, strict=True)]

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Per-anchor class logits, x1 y1 x2 y2 boxes and anchor points (training mode), or
        [N, 4 + nc, A] cx cy w h and sigmoid scores (export mode).
        """
        logits, boxes, anchors = [], [], []
        for head, feat in zip(self.heads, self._levels(x), strict=True):
            cls, box = head(feat)
            n, _, h, w = cls.shape
            ys = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) * head.stride
            xs = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) * head.stride
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            points = torch.stack([gx, gy], -1).reshape(-1, 2)
            ltrb = F.softplus(box).flatten(2).transpose(1, 2) * head.stride
            boxes.append(torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1))
            logits.append(cls.flatten(2).transpose(1, 2))
            anchors.append(points)
        logits_all, boxes_all = torch.cat(logits, 1), torch.cat(boxes, 1)
        if not self.export_mode:
            return logits_all, boxes_all, torch.cat(anchors, 0)
        cxcy = (boxes_all[..., :2] + boxes_all[..., 2:]) / 2
        wh = boxes_all[..., 2:] - boxes_all[..., :2]
        return torch.cat([cxcy, wh, logits_all.sigmoid()], -1).transpose(1, 2)


def build_model(spec: DetectorSpec) -> Detector:
    """A new Detector for `spec`."""
    return Detector(spec)


def spec_from_dict(data: dict) -> DetectorSpec:
    """The DetectorSpec of a `to_dict` dict (lists back to tuples)."""
    return DetectorSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
