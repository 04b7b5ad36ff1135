"""Small report helpers: JSON files and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(data: Any, path: str | Path) -> Path:
    """Write `data` as indented JSON (numpy scalars, tuples and paths converted; NaN -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    return path


def plot_curves(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Training loss (left) and every numeric `val_*` metric (right) against epoch."""
    path = Path(path)
    trained = [row for row in history if "loss" in row]  # a row before training has none
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(
        [row["epoch"] for row in trained], [row["loss"] for row in trained], label="train loss"
    )
    left.set_xlabel("epoch")
    left.set_yscale("log")
    left.legend()
    keys = dict.fromkeys(
        k
        for row in history
        for k, v in row.items()
        if k.startswith("val_") and isinstance(v, float)
    )
    for key in keys:  # epochs without validation are left out of that metric's line
        points = [(row["epoch"], row[key]) for row in history if key in row]
        right.plot(*zip(*points, strict=True), label=key[4:])
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    if keys:  # a history without validation has nothing to name
        right.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_roc(
    fpr: np.ndarray, tpr: np.ndarray, auroc: float, path: str | Path, title: str = ""
) -> Path:
    """ROC curve with its area in the legend."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUROC {auroc:.4f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def save_overlay(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, path: str | Path, title: str = ""
) -> Path:
    """Image | ground truth | prediction, side by side (label maps shown with a colour map)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    shown = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    vmax = max(int(truth.max()), int(pred.max()), 1)
    for ax, panel, name in zip(
        axes, (shown, truth, pred), ("image", "truth", "prediction"), strict=True
    ):
        if panel is shown:
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
        else:
            ax.imshow(panel, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
