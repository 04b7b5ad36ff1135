"""A volumetric model's pre- and postprocessing: grid, intensities, masks (torch-free).

`preprocess` normalises the volume's intensities per `config.volume.normalisation` on its own
grid and resamples it (linear) to the model's `spacing_mm`; the caller runs the sliding window
(`vision.volume.window`) over the result, blending the model's raw output (logits, as MONAI's
`sliding_window_inference` does). `postprocess` turns that blended output into probabilities
(softmax for `argmax` with several classes, sigmoid otherwise, as the 2D path does), resamples
them (linear) to the original grid and makes one mask per label: argmax over classes without
`postprocess.background_class`, or probability > `mask_threshold` for `sigmoid`. Masks with
fewer than `volume.min_voxels` voxels (or none) are left out.
"""

from __future__ import annotations

import numpy as np

from vision.config import ModelConfig
from vision.errors import ConfigError, InvalidInputError
from vision.postprocess import sigmoid, softmax
from vision.volume.resample import resample_to_shape, resampled_shape
from vision.volume.types import Volume, VolumeMask, VolumeMeta, VolumeResult


def normalise(voxels: np.ndarray, config: ModelConfig) -> np.ndarray:
    """float32 intensities per `config.volume`: zscore, zscore_nonzero, window or none."""
    spec = config.volume
    values = voxels.astype(np.float32, copy=False)
    if spec.normalisation == "none":
        return values.copy()
    if spec.normalisation == "window":
        scaled = (values - spec.window_min) / (spec.window_max - spec.window_min)
        return np.clip(scaled, 0.0, 1.0).astype(np.float32)
    mask = values != 0 if spec.normalisation == "zscore_nonzero" else np.ones(values.shape, bool)
    out = np.zeros_like(values)
    if not mask.any():
        return out
    chosen = values[mask].astype(np.float64)
    std = float(chosen.std()) or 1.0
    out[mask] = ((chosen - chosen.mean()) / std).astype(np.float32)
    return out


def _label(labels: tuple[str, ...], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


class VolumePipeline:
    """Pre- and postprocessing of one volumetric model (task `volumetric_segmentation`)."""

    def __init__(self, config: ModelConfig) -> None:
        """Bind the model's config; refuses a config of another task."""
        if config.task != "volumetric_segmentation":
            raise ConfigError(f"{config.name}: task {config.task} is not volumetric_segmentation")
        if config.input.channels not in (0, 1):
            raise ConfigError(f"{config.name}: volumetric models take one channel")
        self.config = config

    def preprocess(self, volume: Volume) -> tuple[np.ndarray, VolumeMeta]:
        """The model's input [1, D', H', W'] float32 at its spacing, and how to map back."""
        if volume.voxels.ndim != 3 or min(volume.voxels.shape) < 1:
            raise InvalidInputError(f"a volume is [D, H, W], got shape {volume.voxels.shape}")
        target = tuple(float(s) for s in self.config.volume.spacing_mm)
        shape = resampled_shape(volume.shape, volume.spacing_mm, target)
        tensor = resample_to_shape(normalise(volume.voxels, self.config), shape, order=1)
        meta = VolumeMeta(
            shape=volume.shape,
            spacing_mm=tuple(float(s) for s in volume.spacing_mm),  # type: ignore[arg-type]
            model_shape=shape,
            model_spacing_mm=target,  # type: ignore[arg-type]
        )
        return tensor[None].astype(np.float32, copy=False), meta

    def probabilities(self, output: np.ndarray) -> np.ndarray:
        """Blended model output [K, D', H', W'] as probabilities (softmax or sigmoid)."""
        if output.ndim != 4:
            raise InvalidInputError(f"model output [K, D, H, W] expected, got {output.shape}")
        logits = output.astype(np.float32)
        if self.config.postprocess.type == "argmax" and logits.shape[0] > 1:
            return softmax(logits, axis=0)
        return sigmoid(logits)

    def postprocess(self, output: np.ndarray, meta: VolumeMeta) -> VolumeResult:
        """Masks on the original grid from the blended model output [K, D', H', W']."""
        probs = resample_to_shape(self.probabilities(output), meta.shape, order=1)
        if self.config.postprocess.type == "argmax" and probs.shape[0] > 1:
            winner = probs.argmax(axis=0)
            candidates = [
                (c, winner == c)
                for c in range(probs.shape[0])
                if c != self.config.postprocess.background_class
            ]
        else:
            threshold = self.config.postprocess.mask_threshold
            candidates = [(c, probs[c] > threshold) for c in range(probs.shape[0])]
        voxel_mm3 = float(np.prod(meta.spacing_mm))
        masks = []
        for class_id, mask in candidates:
            count = int(np.count_nonzero(mask))
            if count == 0 or count < self.config.volume.min_voxels:
                continue
            masks.append(
                VolumeMask(
                    class_id=class_id,
                    label=_label(self.config.labels, class_id),
                    score=float(probs[class_id][mask].mean()),
                    mask=mask,
                    voxel_count=count,
                    volume_mm3=count * voxel_mm3,
                )
            )
        return VolumeResult(masks=masks, shape=meta.shape, spacing_mm=meta.spacing_mm)
