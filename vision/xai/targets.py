"""Explanation targets: the scalar per image whose gradient Grad-CAM follows.

Two forms of the same targets:

* `target_scores` (tensor form, batched, traceable): used inside the ONNX explain graph, where
  the targets arrive as graph inputs (`target_class` [N] int64, plus `target_mask` [N, 1, H, W]
  float or `target_anchor` [N] int64).
* `gradcam_targets` (pytorch-grad-cam form, one callable per image): used to compute the eager
  reference with `pytorch_grad_cam` for parity checks. Needs only torch, not grad-cam.

Kinds, following pytorch-grad-cam's `model_targets`:

* ``classification``: logits [N, C]; score = logit of class c (`ClassifierOutputTarget`).
* ``segmentation``: logits [N, C, H, W]; score = sum of class-c logits inside the mask
  (`SemanticSegmentationTarget`; an all-ones mask means the whole image).
* ``detection``: YOLOv8 layout [N, 4 + nc, A]; score = sigmoid score of class c at anchor a.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

TargetKind = Literal["classification", "segmentation", "detection"]
KINDS: tuple[str, ...] = ("classification", "segmentation", "detection")

# ONNX input names after `images`, per kind.
TARGET_INPUTS: dict[str, tuple[str, ...]] = {
    "classification": ("target_class",),
    "segmentation": ("target_class", "target_mask"),
    "detection": ("target_class", "target_anchor"),
}
# The model's usual output name(s) in this project, per kind.
MODEL_OUTPUTS: dict[str, tuple[str, ...]] = {
    "classification": ("logits",),
    "segmentation": ("logits",),
    "detection": ("output0",),
}
BOX_FIELDS = 4  # cx, cy, w, h before the class scores in the detector's export layout


def check_kind(kind: str) -> None:
    """Raise ValueError unless `kind` is a known target kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown target kind {kind!r}; known: {list(KINDS)}")


def _one_hot(index: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """[N] int64 -> [N, size]; a comparison, so it traces without data-dependent checks."""
    return (torch.arange(size, device=index.device) == index[:, None]).to(dtype)


def target_scores(kind: str, output: Tensor, target_class: Tensor, aux: Tensor | None) -> Tensor:
    """Per-image target score [N] from the model's primary output and the target tensors.

    `aux` is the mask [N, 1, H, W] (segmentation), the anchor index [N] (detection) or None.
    """
    if kind == "classification":
        return (output * _one_hot(target_class, output.shape[1], output.dtype)).sum(1)
    if aux is None:
        raise ValueError(f"target kind {kind!r} needs {TARGET_INPUTS[kind][1]}")
    if kind == "segmentation":
        onehot = _one_hot(target_class, output.shape[1], output.dtype)[:, :, None, None]
        return (output * onehot * aux).sum((1, 2, 3))
    if kind == "detection":
        scores = output[:, BOX_FIELDS:, :]
        cls = _one_hot(target_class, scores.shape[1], output.dtype)[:, :, None]
        anchor = _one_hot(aux, scores.shape[2], output.dtype)[:, None, :]
        return (scores * cls * anchor).sum((1, 2))
    raise ValueError(f"unknown target kind {kind!r}; known: {list(KINDS)}")


class ClassTarget:
    """pytorch-grad-cam target: logit of `category` in a [C] output."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: Tensor) -> Tensor:
        """The logit of `category`."""
        return output[self.category]


class SegmentationTarget:
    """pytorch-grad-cam target: sum of class `category` logits inside `mask` ([H, W])."""

    def __init__(self, category: int, mask: Tensor) -> None:
        self.category = category
        self.mask = mask

    def __call__(self, output: Tensor) -> Tensor:
        """Sum of the `category` logits inside the mask."""
        return (output[self.category] * self.mask.to(output.device)).sum()


class DetectionScoreTarget:
    """pytorch-grad-cam target: score of class `category` at `anchor` in a [4 + nc, A] output."""

    def __init__(self, category: int, anchor: int) -> None:
        self.category = category
        self.anchor = anchor

    def __call__(self, output: Tensor) -> Tensor:
        """Score of `category` at `anchor`."""
        return output[BOX_FIELDS + self.category, self.anchor]


def gradcam_targets(kind: str, target_class: Tensor, aux: Tensor | None = None) -> list:
    """One pytorch-grad-cam target callable per image, equal to `target_scores`."""
    check_kind(kind)
    classes = [int(c) for c in target_class]
    if kind == "classification":
        return [ClassTarget(c) for c in classes]
    if aux is None:
        raise ValueError(f"target kind {kind!r} needs {TARGET_INPUTS[kind][1]}")
    if kind == "segmentation":
        return [SegmentationTarget(c, m[0]) for c, m in zip(classes, aux, strict=True)]
    return [DetectionScoreTarget(c, int(a)) for c, a in zip(classes, aux, strict=True)]


@torch.no_grad()
def default_targets(kind: str, output: Tensor) -> tuple[Tensor, Tensor | None]:
    """Targets that explain the model's own prediction on each image.

    Classification: the top class. Segmentation: the last class (the foreground of a binary
    model) over the whole image. Detection: the anchor with the highest class score, its class.
    """
    check_kind(kind)
    n = output.shape[0]
    if kind == "classification":
        return output.argmax(1), None
    if kind == "segmentation":
        cls = torch.full((n,), output.shape[1] - 1, dtype=torch.int64)
        return cls, torch.ones(n, 1, *output.shape[2:], dtype=output.dtype)
    best, cls = output[:, BOX_FIELDS:, :].max(1)  # [N, A] each
    anchor = best.argmax(1)
    return cls.gather(1, anchor[:, None])[:, 0], anchor
