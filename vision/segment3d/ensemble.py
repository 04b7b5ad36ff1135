"""An ensemble of volumetric networks served as one: the mean of their softmax, as logits.

`SoftmaxMean(members)` returns `log(mean_k softmax(member_k(x)))`: its softmax is the mean of
the members' probabilities (nnU-Net's ensembling), and it is an ordinary logits network to
everything downstream — the ONNX export and its parity gate, the sliding window and Gaussian
blending, test-time mirroring, `vision.weights.load_bundled` and the server. The members are
trained one per seed (`Recipe3D.ensemble_seeds`), concurrently, each in the recipe's budget; the
state dict keys are `members.<k>.<member's key>`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


class SoftmaxMean(nn.Module):
    """log of the mean of the members' softmax over the channel axis (dim 1)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.log_count = math.log(len(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits whose softmax is the members' mean probability."""
        stacked = torch.stack([m(x).log_softmax(1) for m in self.members])
        # logsumexp written out: ONNX's ReduceLogSumExp does not convert down to opset 17
        peak = stacked.amax(0)
        return peak + torch.log(torch.exp(stacked - peak).sum(0)) - self.log_count


def member_checkpoints(run: Path, seeds: Sequence[int]) -> list[Path]:
    """Each member's best checkpoint in an ensemble run folder (`<run>/seed<k>/best.pt`)."""
    paths = [run / f"seed{seed}" / "best.pt" for seed in seeds]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no checkpoint at {', '.join(missing)}: train the members first "
            f"(`vision train --recipe hippocampus --out {run}`)"
        )
    return paths
