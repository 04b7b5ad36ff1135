"""Task-aligned assignment (YOLOv8/TOOD style) and the detection loss (quality BCE + GIoU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torchvision.ops import box_iou, generalized_box_iou_loss


@torch.no_grad()
def assign(
    scores: Tensor,
    boxes: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Targets for one image: (foreground mask [A], boxes [A, 4], soft class scores [A, C]).

    Each ground-truth box takes the `topk` anchors inside it with the highest
    score^alpha * IoU^beta; an anchor claimed twice goes to the box it overlaps most.
    """
    num_anchors, num_classes = scores.shape
    if gt_boxes.numel() == 0:
        return (
            torch.zeros(num_anchors, dtype=torch.bool),
            torch.zeros(num_anchors, 4),
            torch.zeros(num_anchors, num_classes),
        )
    lt = anchors[None] - gt_boxes[:, None, :2]
    rb = gt_boxes[:, None, 2:] - anchors[None]
    inside = torch.cat([lt, rb], -1).amin(-1) > 1e-6  # [G, A]
    ious = box_iou(gt_boxes, boxes).clamp(min=0)
    metric = (scores[:, gt_labels].T.pow(alpha) * ious.pow(beta) + 1e-12) * inside
    top = metric.topk(min(topk, num_anchors), dim=1).indices
    mask = torch.zeros_like(inside).scatter_(1, top, True) & inside
    gt_index = (mask * (ious + 1e-9)).argmax(0)  # highest IoU among claimants
    foreground = mask.any(0)
    final = torch.zeros_like(mask)
    final[gt_index[foreground], torch.nonzero(foreground).squeeze(1)] = True
    metric = metric * final
    iou_max = (ious * final).amax(1, keepdim=True)
    norm = (metric * iou_max / (metric.amax(1, keepdim=True) + 1e-12)).amax(0)
    target_scores = F.one_hot(gt_labels[gt_index], num_classes).float()
    target_scores *= (norm * foreground)[:, None]
    return foreground, gt_boxes[gt_index], target_scores


def detection_loss(
    logits: Tensor,
    boxes: Tensor,
    anchors: Tensor,
    targets: list[Tensor],
    box_gain: float = 5.0,
) -> tuple[Tensor, dict[str, float]]:
    """Loss for a batch: targets[i] is [M, 5] (class, x1, y1, x2, y2) in input pixels."""
    scores = logits.detach().sigmoid()
    fg, tboxes, tscores = [], [], []
    for i, target in enumerate(targets):
        f, b, s = assign(scores[i], boxes[i].detach(), anchors, target[:, 1:], target[:, 0].long())
        fg.append(f)
        tboxes.append(b)
        tscores.append(s)
    fg_all, tboxes_all, tscores_all = torch.stack(fg), torch.stack(tboxes), torch.stack(tscores)
    norm = tscores_all.sum().clamp(min=1.0)
    cls_loss = F.binary_cross_entropy_with_logits(logits, tscores_all, reduction="sum") / norm
    if fg_all.any():
        weight = tscores_all.sum(-1)[fg_all]
        giou = generalized_box_iou_loss(boxes[fg_all], tboxes_all[fg_all], reduction="none")
        box_loss = (giou * weight).sum() / norm
    else:
        box_loss = boxes.sum() * 0.0
    total = cls_loss + box_gain * box_loss
    return total, {"cls": float(cls_loss.detach()), "box": float(box_loss.detach())}
