"""An image-level defect score on top of a trained segmentation network.

The largest per-pixel defect probability is a poor image score when the network fires with
confidence on a few pixels of defect-free images. A logistic regression (scikit-learn) on the
network's own pooled encoder features, fitted on the training images once segmentation training
has finished, ranks images better. It is exported in the same ONNX graph as a second output
(`defect_score`, a probability per image), so the server needs no extra model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

SCORE_OUTPUT = "defect_score"


def _layer(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


class _Keep:
    """A forward hook that stores its layer's output in `owner._seen[name]`.

    An object, not a closure over the wrapper: `copy.deepcopy` of a model carrying these hooks
    (the randomisation check copies it) copies `owner` with the model, so the copy's hooks
    write into the copy's features, never the original's. The dict is looked up at call time
    (the ONNX exporter may swap module attributes while it traces).
    """

    def __init__(self, owner: PooledFeatures, name: str) -> None:
        self.owner = owner
        self.name = name

    def __call__(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        """Keep the layer's output."""
        self.owner._seen[self.name] = output


class PooledFeatures(nn.Module):
    """Runs `model` and returns (its output, [N, 2*sum(C)] max- and mean-pooled features of the
    named layers)."""

    def __init__(self, model: nn.Module, layers: list[str]) -> None:
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self._seen: dict[str, torch.Tensor] = {}
        for name in self.layers:
            _layer(model, name).register_forward_hook(_Keep(self, name))

    def remove(self) -> None:
        """Take this wrapper's hooks off the wrapped model (found by their owner, so a deep copy
        removes its own)."""
        for name in self.layers:
            hooks = _layer(self.model, name)._forward_hooks
            for key in [k for k, h in hooks.items() if isinstance(h, _Keep) and h.owner is self]:
                del hooks[key]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output and the pooled features of the named layers."""
        out = self.model(x)
        maps = [self._seen.pop(name) for name in self.layers]
        pooled = [p for m in maps for p in (m.amax(dim=(2, 3)), m.mean(dim=(2, 3)))]
        return out, torch.cat(pooled, dim=1)


class WithImageScore(nn.Module):
    """Segmentation logits plus a per-image defect probability (two ONNX outputs)."""

    def __init__(self, model: nn.Module, layers: list[str], weight: Any, bias: float) -> None:
        super().__init__()
        self.features = PooledFeatures(model, layers)
        weight = torch.as_tensor(np.asarray(weight, np.float32)).reshape(1, -1)
        self.head = nn.Linear(weight.shape[1], 1)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.fill_(float(bias))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits and the per-image defect probability."""
        logits, pooled = self.features(x)
        return logits, torch.sigmoid(self.head(pooled)).squeeze(1)


def pooled_features(
    model: nn.Module, layers: list[str], inputs: np.ndarray, batch: int = 16
) -> np.ndarray:
    """[N, F] pooled features of `inputs` (N, C, H, W float32) under `model` in eval mode."""
    features = PooledFeatures(model.eval(), layers)
    device = next(model.parameters()).device
    chunks = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            x = torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch])).to(device)
            chunks.append(features(x)[1].cpu().numpy())
    features.remove()
    return np.concatenate(chunks)


def fit_head(features: np.ndarray, has_defect: np.ndarray, c: float, seed: int = 0) -> dict:
    """Standardised L2 logistic regression, folded into one linear layer (weight, bias)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    mean, std = features.mean(0), features.std(0) + 1e-6
    reg = LogisticRegression(C=c, max_iter=5000, random_state=seed)
    reg.fit((features - mean) / std, has_defect)
    weight = reg.coef_[0] / std
    bias = float(reg.intercept_[0] - np.sum(reg.coef_[0] * mean / std))
    train_scores = features @ weight + bias
    return {
        "weight": [float(w) for w in weight],
        "bias": bias,
        "C": c,
        "train_images": int(len(has_defect)),
        "train_auroc": float(roc_auc_score(has_defect, train_scores)),
    }


def with_image_score(model: nn.Module, head: dict) -> WithImageScore:
    """`model` wrapped with the fitted head recorded in a checkpoint (`head` from `fit_head`,
    plus its `layers`)."""
    return WithImageScore(model, head["layers"], head["weight"], head["bias"]).eval()
