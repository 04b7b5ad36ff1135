"""Weights files: a torch state dict as fp32 safetensors (`<version>/weights.safetensors`).

Plain file I/O with no knowledge of any task, so every task's export can write its weights
(`vision.weights` builds the networks of cards and re-exports these).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_FILE = "weights.safetensors"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> dict:
    """Write `model`'s state dict (fp32, contiguous) as safetensors; {file, sha256, bytes}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: _stored(v) for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).contiguous().clone()


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors state dict into `model` (every key, every shape); eval mode."""
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()
