"""PNG plots of `vision xai-eval`: deletion / insertion curves and the randomisation check."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(report: dict, path: Path) -> Path:
    """Mean deletion and insertion curves, Grad-CAM vs random, with their AUCs."""
    fractions = np.asarray(report["fractions"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
        part = report[kind]
        ax.plot(
            fractions,
            part["curve_gradcam"],
            "o-",
            ms=3,
            label=f"{report['method']} (AUC {part['gradcam_auc']:.3f})",
        )
        ax.plot(
            fractions,
            part["curve_random"],
            "s--",
            ms=3,
            color="grey",
            label=f"random (AUC {part['random_auc']:.3f})",
        )
        verb = "removed" if kind == "deletion" else "inserted"
        ax.set(title=kind, xlabel=f"fraction of pixels {verb}", xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("target score")
    fig.suptitle(f"{report['model']}: {report['targets']} targets, {report['images']} test images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(steps: list[dict], key: str) -> np.ndarray:
    """One statistic per step as floats (NaN where no target was scored)."""
    return np.array([np.nan if s.get(key) is None else s[key] for s in steps], dtype=float)


def plot_randomisation(report: dict, path: Path) -> Path:
    """Spearman (trained vs randomised map) after each cascading randomisation step: over the
    image, |rho|, and inside the explained boxes for a detector."""
    rand = report["randomisation"]
    steps = rand["steps"]
    x = np.arange(len(steps))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(steps) + 2), 4.5))
    ax.errorbar(
        x,
        _series(steps, "spearman_mean"),
        yerr=_series(steps, "spearman_std"),
        fmt="o-",
        capsize=3,
        label="Spearman over the image, mean ± sd",
    )
    ax.plot(x, _series(steps, "abs_spearman_mean"), "^:", color="C1", label="|Spearman|, image")
    if "box_abs_spearman_mean" in steps[0]:
        ax.plot(x, _series(steps, "box_spearman_mean"), "s-", color="C2", label="Spearman, box")
        ax.plot(
            x, _series(steps, "box_abs_spearman_mean"), "v:", color="C3", label="|Spearman|, box"
        )
    goal = rand["goal_abs_spearman_below"]
    for level in (goal, -goal):
        ax.axhline(level, color="red", ls=":", label="goal |rho|" if level > 0 else None)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xticks(
        x,
        [f"{s['layers_randomised']}: {s['down_to']}" for s in steps],
        rotation=70,
        ha="right",
        fontsize=7,
    )
    ax.set(
        ylim=(-1.05, 1.05),
        ylabel="rank correlation with the trained map",
        title=f"{report['model']}: cascading randomisation, output layer first",
    )
    ax.legend(loc="lower left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
