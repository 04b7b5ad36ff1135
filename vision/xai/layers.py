"""Grad-CAM target layers: one module, or several whose maps are combined into one grid.

A target layer is written as a dotted module name (``backbone.stages.0``) or as several
comma-separated names (``smooth.0,smooth.1,smooth.2``: a detector's neck outputs, one per
head). With several layers each layer's raw CAM is computed from its own activation and
gradient, resized (bilinear, half-pixel centres, as cv2 and pytorch-grad-cam) to the finest
layer's grid, and summed. For a detector's neck a target anchor's score depends on one level
only, so every other level's map is exactly zero and the sum is that level's map: the same map
pytorch-grad-cam makes with the same list of target layers (it ReLUs, normalises and averages
the per-layer maps; an all-zero layer adds nothing).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SEPARATOR = ","


def layer_names(spec: str) -> list[str]:
    """'a,b' -> ['a', 'b']; raises ValueError on an empty name."""
    names = [n.strip() for n in spec.split(SEPARATOR)]
    if not names or any(not n for n in names):
        raise ValueError(f"target layer {spec!r}: give dotted module names separated by ','")
    return names


def resolve_layers(model: nn.Module, spec: nn.Module | list | str) -> list[nn.Module]:
    """The target layer(s) as modules: a module, a list of modules, or a name spec."""
    if isinstance(spec, nn.Module):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return [m if isinstance(m, nn.Module) else model.get_submodule(m) for m in spec]
    return [model.get_submodule(n) for n in layer_names(spec)]


def combine_cams(cams: list[Tensor]) -> Tensor:
    """Raw CAMs [N, h_i, w_i] of several layers -> their sum on the finest grid [N, h, w].

    One layer: its raw map unchanged. Several: each is ReLU'd before the resize (a negative
    coarse cell would otherwise bleed into positive fine cells), as pytorch-grad-cam does.
    """
    if len(cams) == 1:
        return cams[0]
    finest = max(cams, key=lambda c: c.shape[-1] * c.shape[-2])
    size = tuple(int(s) for s in finest.shape[-2:])
    total = torch.zeros_like(finest)
    for cam in cams:
        cam = torch.relu(cam)  # as pytorch-grad-cam: each layer's map is ReLU'd, then resized
        if tuple(cam.shape[-2:]) != size:
            cam = _resize(cam, size)
        total = total + cam
    return total


def _resize(cam: Tensor, size: tuple[int, ...]) -> Tensor:
    """Bilinear resize of [N, h, w] to `size` (half-pixel centres, no antialiasing)."""
    return torch.nn.functional.interpolate(
        cam[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0]
