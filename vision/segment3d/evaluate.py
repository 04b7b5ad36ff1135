"""Evaluation through the served path: NIfTI -> `VolumePipeline.preprocess` -> sliding window
over the ONNX session -> `postprocess` -> label map; Dice per label and the 95th-percentile
Hausdorff distance in mm (MONAI metrics), with n and 95 % bootstrap intervals over cases."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from tqdm import tqdm

from vision.config import ModelConfig, load_config
from vision.export import read_card, write_card
from vision.model_card import note_evaluation
from vision.reports import write_json
from vision.runtime import OnnxModel
from vision.stats import BOOTSTRAP_DRAWS, mean_ci
from vision.volume.pipeline import VolumePipeline
from vision.volume.sources import volume_from_nifti
from vision.volume.tta import ProbabilityMean, flip_spatial
from vision.volume.types import Volume
from vision.volume.window import sliding_window


class OnnxVolumeSegmenter:
    """A repository model run as the server runs it (config, pipeline, ONNX session);
    `tta_flips` replaces the config's `volume.tta_flips` (None: the config's)."""

    def __init__(
        self, model_dir: Path, version: int = 1, tta_flips: list[list[int]] | None = None
    ) -> None:
        config = load_config(model_dir)
        if tta_flips is not None:
            flips = tuple(tuple(int(a) for a in f) for f in tta_flips)
            config = dataclasses.replace(
                config, volume=dataclasses.replace(config.volume, tta_flips=flips)
            )
        self.config: ModelConfig = config
        self.pipeline = VolumePipeline(self.config)
        self.session = OnnxModel(model_dir / str(version) / self.config.model_file)
        self.input_name = self.session.inputs[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a batch of windows [N, 1, pd, ph, pw]."""
        feeds = {self.input_name: np.ascontiguousarray(batch, np.float32)}
        return self.session.run(feeds)[self.session.output_names[0]]

    def label_map(self, path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
        """The predicted labels of a NIfTI volume on its own grid, and its spacing."""
        volume = volume_from_nifti(path)
        return self.labels_of(volume), volume.spacing_mm

    def labels_of(self, volume: Volume) -> np.ndarray:
        """The predicted labels of `volume` (e.g. an assembled DICOM series) on its grid."""
        tensor, meta = self.pipeline.preprocess(volume)
        spec = self.config.volume
        mean = ProbabilityMean()
        for axes in self.pipeline.passes():
            logits = sliding_window(
                flip_spatial(tensor, axes),
                spec.patch,
                spec.overlap,
                self.run,
                self.config.batching.max_batch_size,
                spec.blend,
                spec.sigma_scale,
            )
            mean.add(self.pipeline.probabilities(logits), axes)
        labels = np.zeros(volume.shape, np.int64)
        for mask in self.pipeline.postprocess_probabilities(mean.result(), meta).masks:
            labels[mask.mask] = mask.class_id
        return labels


def _one_hot(labels: np.ndarray, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(labels), n).permute(3, 0, 1, 2)[None]


def case_metrics(pred: np.ndarray, truth: np.ndarray, spacing: tuple, n: int) -> dict:
    """Dice and HD95 (mm) of each foreground label for one case (MONAI metrics)."""
    p, t = _one_hot(pred, n).float(), _one_hot(truth, n).float()
    dice = DiceMetric(include_background=False, reduction="none")(p, t)[0]
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    hd95 = hd(p, t, spacing=list(spacing))[0]
    voxels = [
        [
            int(np.count_nonzero((pred == c) & (truth == c))),
            int((pred == c).sum()),
            int((truth == c).sum()),
        ]
        for c in range(1, n)
    ]
    return {"dice": dice.tolist(), "hd95_mm": hd95.tolist(), "voxels": voxels}


def pooled_dice(cases: dict[str, dict], index: int, seed: int = 0) -> dict[str, Any]:
    """Dice of one label over the voxels of all cases pooled, n and its 95 % percentile
    bootstrap interval over cases (a draw sums the counts of the cases it picked)."""
    counts = np.array([c["voxels"][index] for c in cases.values()], np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), (BOOTSTRAP_DRAWS, len(counts)))
    drawn = counts[picks].sum(1)
    values = 2 * drawn[:, 0] / np.maximum(drawn[:, 1] + drawn[:, 2], 1)
    total = counts.sum(0)
    low, high = np.percentile(values, [2.5, 97.5])
    value = 2 * total[0] / max(total[1] + total[2], 1)
    return {"mean": float(value), "n": len(counts), "ci95": [float(low), float(high)]}


def bootstrap_ci(values: list[float], seed: int = 0) -> dict[str, Any]:
    """Mean, n and the 95 % percentile bootstrap interval of the finite `values`
    (`vision.stats.mean_ci`), with their median and how many were not finite."""
    x = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    found = mean_ci(list(x), seed)
    return {
        "mean": found["value"],
        "n": found["n"],
        "ci95": found["ci95"],
        **({"median": float(np.median(x)), "not_finite": len(values) - len(x)} if len(x) else {}),
    }


def summarise(cases: dict[str, dict], labels: list[str]) -> dict[str, Any]:
    """Per label: Dice and HD95 with n and bootstrap intervals."""
    out = {}
    for i, label in enumerate(labels[1:]):
        out[f"dice_{label}"] = bootstrap_ci([c["dice"][i] for c in cases.values()])
        out[f"hd95_mm_{label}"] = bootstrap_ci([c["hd95_mm"][i] for c in cases.values()])
        if all("voxels" in c for c in cases.values()):
            out[f"dice_pooled_{label}"] = pooled_dice(cases, i)
    out["dice_mean"] = bootstrap_ci([float(np.mean(c["dice"])) for c in cases.values()])
    return out


def evaluate(
    model_dir: Path,
    root: Path,
    splits_path: Path,
    split: str,
    out: Path,
    limit_cases: int = 0,
    record: bool = True,
    tta_flips: list[list[int]] | None = None,
) -> dict[str, Any]:
    """Evaluate `model_dir` on `split` of the recorded split; report JSON + PNG in `out`.

    `tta_flips` replaces the config's test-time mirroring (None: as the server runs it)."""
    names = json.loads(splits_path.read_text())["splits"][split]
    names = names[:limit_cases] if limit_cases else names
    segmenter = OnnxVolumeSegmenter(model_dir, tta_flips=tta_flips)
    labels = list(segmenter.config.labels)
    cases, start = {}, time.monotonic()
    for name in tqdm(names, desc=f"eval {split}"):
        pred, spacing = segmenter.label_map(root / "imagesTr" / f"{name}.nii.gz")
        truth = np.rint(volume_from_nifti(root / "labelsTr" / f"{name}.nii.gz").voxels)
        cases[name] = case_metrics(pred, truth.astype(np.int64), spacing, len(labels))
    seconds = time.monotonic() - start
    summary = summarise(cases, labels)
    report = {
        "model": model_dir.name,
        "split": split,
        "n": len(names),
        "path": "ONNX (VolumePipeline + sliding_window, the served path)",
        "tta_flips": [list(f) for f in segmenter.config.volume.tta_flips],
        "seconds": round(seconds, 1),
        "summary": {k: round(v["mean"], 4) for k, v in summary.items()},
        "metrics": summary,
        "cases": cases,
    }
    write_json(report, out / f"eval-{split}.json")
    plot_cases(
        cases, labels, out / f"eval-{split}.png", f"{model_dir.name} {split} (n={len(names)})"
    )
    if record and not limit_cases:
        _record(model_dir, split, summary, len(names), out, report["tta_flips"])
    return report


def _record(
    model_dir: Path, split: str, summary: dict, n: int, out: Path, flips: list[list[int]]
) -> None:
    """Write the figures into the card (metrics.<split>, evaluation.<split>) and the report
    files beside the model."""
    card = read_card(model_dir)
    for name in (f"eval-{split}.json", f"eval-{split}.png"):
        shutil.copyfile(out / name, model_dir / name)
    card["files"] = sorted({*card.get("files", []), f"eval-{split}.json", f"eval-{split}.png"})
    card["metrics"] = {
        **card.get("metrics", {}),
        split: {
            k: {"value": v["mean"], "n": v["n"], "ci95": v["ci95"], "unit": _unit(k)}
            for k, v in summary.items()
        },
    }
    card["evaluation"] = {
        **card.get("evaluation", {}),
        split: {
            "n": n,
            "method": "ONNX through vision.volume (VolumePipeline + sliding_window, "
            f"overlap 0.5, gaussian; test-time mirroring tta_flips {flips}); MONAI DiceMetric "
            "and HausdorffDistanceMetric(percentile=95) on one-hot labels, mm; 95 % percentile "
            "bootstrap over cases (2000 resamples)",
            "intervals": summary,
        },
        "definitions": DEFINITIONS,
    }
    write_card(model_dir, note_evaluation(card, split, n, model_dir, 1))


DEFINITIONS = {
    "dice_<label>": "Dice of one label per case (MONAI DiceMetric), mean over cases",
    "dice_pooled_<label>": "Dice of one label over the voxels of all cases pooled",
    "hd95_mm_<label>": "95th-percentile Hausdorff distance of one label (mm), mean over cases",
    "dice_mean": "per case, the mean Dice of the foreground labels; mean over cases",
    "ci95": "95 % percentile bootstrap interval over cases (2,000 draws, seed 0)",
    "n": "cases",
    "not applicable": "image AUROC and the defect-free false-positive rate: every case holds "
    "both labels and the model has no image score",
}


def _unit(key: str) -> str:
    return "mm" if key.startswith("hd95") else "Dice"


def plot_cases(cases: dict[str, dict], labels: list[str], path: Path, title: str) -> Path:
    """Per-case Dice (left) and HD95 (right) per label."""
    import matplotlib.pyplot as plt  # vision.reports sets the Agg backend

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    for i in range(len(labels) - 1):
        dice = [c["dice"][i] for c in cases.values()]
        hd = [c["hd95_mm"][i] for c in cases.values() if np.isfinite(c["hd95_mm"][i])]
        left.scatter(_jitter(i, len(dice)), dice, s=10)
        right.scatter(_jitter(i, len(hd)), hd, s=10)
    for axis, name in ((left, "Dice"), (right, "HD95 (mm)")):
        axis.set_xticks(range(len(labels) - 1), labels[1:])
        axis.set_ylabel(name)
    left.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _jitter(position: int, n: int) -> np.ndarray:
    return position + np.random.default_rng(position).uniform(-0.15, 0.15, n)
