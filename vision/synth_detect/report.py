"""Held-out evaluation of the real-vs-synthetic detector: per-generator accuracy, ROC, report.

Accuracy for a generator is balanced over the real test images and that generator's test images
(mean of real-kept-real and synthetic-flagged rates), so 50 % is chance and a lower figure means
a more realistic generator. A control set, the real test images re-saved through the synthetic
writer's JPEG path, shows whether the detector reacts to re-encoding rather than to content.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vision.synth_detect.detector import WRITER_QUALITY, Detector, Item, jpeg_roundtrip, load_grey

CONTROL = "real re-saved (control)"


def auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC = P(positive scores above negative), ties count half."""
    if not len(negatives) or not len(positives):
        return float("nan")
    diff = np.asarray(positives)[:, None] - np.asarray(negatives)[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def score(detector: Detector, items: list[Item]) -> dict[str, np.ndarray]:
    """P(synthetic) per group; real images also scored re-saved, as the control group."""
    groups: dict[str, list[float]] = {}
    for item in items:
        pixels = load_grey(item.path)
        key = item.group if item.synthetic else "real"
        groups.setdefault(key, []).append(detector.probability(pixels))
        if not item.synthetic:
            control = jpeg_roundtrip(pixels, WRITER_QUALITY)
            groups.setdefault(CONTROL, []).append(detector.probability(control))
            groups.setdefault(f"real/{item.group}", []).append(groups["real"][-1])
    return {k: np.asarray(v) for k, v in groups.items()}


def metrics(scores: dict[str, np.ndarray], threshold: float, seen: set[str]) -> dict[str, object]:
    """Real and control accuracy, per real category, and per generator."""
    real = scores.get("real", np.zeros(0))
    real_acc = float(np.mean(real < threshold)) if len(real) else float("nan")
    out: dict[str, object] = {
        "threshold": threshold,
        "real": {"n": len(real), "accuracy": round(real_acc, 4)},
        "real_by_category": {
            k.removeprefix("real/"): {
                "n": len(v),
                "accuracy": round(float(np.mean(v < threshold)), 4),
            }
            for k, v in sorted(scores.items())
            if k.startswith("real/")
        },
    }
    if CONTROL in scores:
        ctrl = scores[CONTROL]
        out["control"] = {"n": len(ctrl), "accuracy": round(float(np.mean(ctrl < threshold)), 4)}
    gens = {}
    for name in sorted(k for k in scores if k != "real" and k != CONTROL and "/" not in k):
        s = scores[name]
        flagged = float(np.mean(s >= threshold))
        gens[name] = {
            "seen_in_training": name in seen,
            "n": len(s),
            "flagged_synthetic": round(flagged, 4),
            "balanced_accuracy": round((flagged + real_acc) / 2, 4),
            "accuracy": round(
                (float(np.sum(s >= threshold)) + float(np.sum(real < threshold)))
                / max(len(s) + len(real), 1),
                4,
            ),
            "auc": round(auc(real, s), 4),
        }
    out["generators"] = gens
    return out


def calibrate(real: np.ndarray, synthetic: np.ndarray) -> float:
    """The threshold with the best balanced accuracy (midpoint between neighbouring scores)."""
    cuts = np.unique(np.r_[real, synthetic])
    cuts = np.r_[(cuts[:-1] + cuts[1:]) / 2, cuts[-1] + 1e-6] if len(cuts) > 1 else cuts
    accs = [(np.mean(real < c) + np.mean(synthetic >= c)) / 2 for c in cuts]
    return float(cuts[int(np.argmax(accs))])


def _roc(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cuts = np.r_[np.inf, np.sort(np.r_[neg, pos])[::-1]]
    return np.array([np.mean(neg >= c) for c in cuts]), np.array([np.mean(pos >= c) for c in cuts])


def plot(report: dict, scores: dict[str, np.ndarray], path: Path) -> Path:
    """Bar chart (balanced accuracy per generator, real and control accuracy) + ROC curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens = report["generators"]
    names = [*gens, "real (kept real)", "control (kept real)"]
    values = [g["balanced_accuracy"] for g in gens.values()]
    values += [report["real"]["accuracy"], report.get("control", {}).get("accuracy", np.nan)]
    colours = ["tab:blue" if g["seen_in_training"] else "tab:orange" for g in gens.values()]
    colours += ["tab:green", "tab:grey"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    bars = ax1.bar(range(len(names)), values, color=colours)
    ax1.bar_label(bars, fmt="%.2f")
    ax1.axhline(0.5, ls=":", c="k", lw=1)
    ax1.axhline(0.9, ls="--", c="tab:red", lw=1)
    ax1.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax1.set_ylim(0, 1.05)
    ax1.set_title("held-out accuracy (blue seen, orange unseen generator)")
    for name, g in gens.items():
        fpr, tpr = _roc(scores["real"], scores[name])
        ax2.plot(fpr, tpr, label=f"{name} AUC {g['auc']:.3f}")
    ax2.plot([0, 1], [0, 1], ":k", lw=1)
    ax2.set_xlabel("real flagged synthetic")
    ax2.set_ylabel("synthetic flagged")
    ax2.set_title("ROC vs real test images")
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def write_report(report: dict, scores: dict[str, np.ndarray], out: Path) -> None:
    """`report.json` and `report.png` in `out`."""
    out = Path(out)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, scores, out / "report.png")
