"""A volumetric model's pre- and postprocessing: orientation, grid, intensities, masks (torch-free).

`preprocess` reorients the volume to `config.volume.orientation` when one is set (axes permuted
and flipped only, `vision.volume.orient`), normalises its intensities per
`config.volume.normalisation` and resamples it (linear, float32) to the model's `spacing_mm`;
the caller runs the sliding window (`vision.volume.window`) over the result — once per
test-time mirroring pass (`passes`, `vision.volume.tta`) — blending the model's raw output
(logits, as MONAI's `sliding_window_inference` does). `probabilities` turns a pass's blended
output into probabilities (softmax for `argmax` with several classes, sigmoid otherwise, as the
2D path does); `postprocess_probabilities` makes one mask per label on the original grid: the
argmax over classes without `postprocess.background_class`, or probability > `mask_threshold`
for `sigmoid`, of the probabilities linearly resampled to the original grid — computed
exactly without resampling them densely (`vision.volume.labels.upsampled_labels`) — then
mapped back to the source orientation. A mask's score is its class's mean probability over the
model-grid voxels with that label. Masks with fewer than `volume.min_voxels` voxels (or none)
are left out.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vision.config import ModelConfig
from vision.errors import ConfigError, InvalidInputError
from vision.postprocess import sigmoid, softmax
from vision.volume.labels import AxisMaps, interpolate_at, upsampled_labels
from vision.volume.orient import Reorientation
from vision.volume.resample import resample_to_shape, resampled_shape
from vision.volume.tta import Flip, flip_passes
from vision.volume.types import Volume, VolumeMask, VolumeMeta, VolumeResult


def normalise(voxels: np.ndarray, config: ModelConfig) -> np.ndarray:
    """float32 intensities per `config.volume`: zscore, zscore_nonzero, window or none (new)."""
    spec = config.volume
    values = voxels.astype(np.float32, copy=False)
    if spec.normalisation == "none":
        return values.copy()
    if spec.normalisation == "window":
        out = values - np.float32(spec.window_min)
        out *= np.float32(1.0 / (spec.window_max - spec.window_min))
        return np.clip(out, 0.0, 1.0, out=out)
    if spec.normalisation == "zscore":
        out = values - np.float32(values.mean(dtype=np.float64))
        out /= np.float32(values.std(dtype=np.float64) or 1.0)
        return out
    mask = values != 0
    out = np.zeros(values.shape, np.float32)
    if not mask.any():
        return out
    chosen = values[mask]
    mean, std = chosen.mean(dtype=np.float64), chosen.std(dtype=np.float64) or 1.0
    out[mask] = (chosen - np.float32(mean)) / np.float32(std)
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

    def passes(self) -> list[Flip]:
        """The test-time mirroring passes: () (as it is), then each configured flip."""
        return flip_passes(self.config.volume.tta_flips)

    def preprocess(self, volume: Volume) -> tuple[np.ndarray, VolumeMeta]:
        """The model's input [1, D', H', W'] float32 at its spacing, and how to map back."""
        if volume.voxels.ndim != 3 or min(volume.voxels.shape) < 1:
            raise InvalidInputError(f"a volume is [D, H, W], got shape {volume.voxels.shape}")
        code = self.config.volume.orientation
        turn = Reorientation.of(volume.direction, code) if code else None
        canonical = turn.volume(volume) if turn else volume
        target = tuple(float(s) for s in self.config.volume.spacing_mm)
        shape = resampled_shape(canonical.shape, canonical.spacing_mm, target)
        tensor = resample_to_shape(normalise(canonical.voxels, self.config), shape, order=1)
        meta = VolumeMeta(
            shape=volume.shape,
            spacing_mm=tuple(float(s) for s in volume.spacing_mm),  # type: ignore[arg-type]
            model_shape=shape,
            model_spacing_mm=target,  # type: ignore[arg-type]
            reorientation=None if turn is None or turn.identity else turn,
        )
        return tensor[None], meta

    def probabilities(self, output: np.ndarray) -> np.ndarray:
        """Blended model output [K, D', H', W'] as probabilities (softmax or sigmoid)."""
        if output.ndim != 4:
            raise InvalidInputError(f"model output [K, D, H, W] expected, got {output.shape}")
        logits = output.astype(np.float32, copy=False)
        if self.config.postprocess.type == "argmax" and logits.shape[0] > 1:
            return softmax(logits, axis=0)
        return sigmoid(logits)

    def postprocess(self, output: np.ndarray, meta: VolumeMeta) -> VolumeResult:
        """Masks on the original grid from one pass's blended model output [K, D', H', W']."""
        return self.postprocess_probabilities(self.probabilities(output), meta)

    def postprocess_probabilities(self, probs: np.ndarray, meta: VolumeMeta) -> VolumeResult:
        """Masks on the original grid from (averaged) probabilities [K, D', H', W']."""
        if probs.ndim != 4:
            raise InvalidInputError(f"probabilities [K, D, H, W] expected, got {probs.shape}")
        turn = meta.reorientation
        grid = turn.shape(meta.shape) if turn else meta.shape
        voxel_mm3 = float(np.prod(meta.spacing_mm))
        masks = []
        for class_id, mask, score in self._masks(probs, grid):
            count = int(np.count_nonzero(mask))
            if count == 0 or count < self.config.volume.min_voxels:
                continue
            value = score(mask)  # on the canonical grid, before mapping back
            if turn is not None:
                mask = np.ascontiguousarray(turn.undo(mask))
            label = _label(self.config.labels, class_id)
            masks.append(VolumeMask(class_id, label, value, mask, count, count * voxel_mm3))
        return VolumeResult(masks=masks, shape=meta.shape, spacing_mm=meta.spacing_mm)

    def _masks(self, probs: np.ndarray, grid: tuple[int, int, int]) -> Iterator[tuple]:
        """(class id, bool mask on the canonical grid, score function) per candidate class."""
        if self.config.postprocess.type == "argmax" and probs.shape[0] > 1:
            low = probs.argmax(axis=0).astype(np.uint8 if probs.shape[0] < 256 else np.int16)
            labels, _ = upsampled_labels(
                low, grid, lambda points, maps: interpolate_at(probs, points, maps).argmax(0)
            )
            for c in range(probs.shape[0]):
                if c != self.config.postprocess.background_class:
                    yield c, labels == c, _scorer(probs[c], low == c, grid)
            return
        threshold = np.float32(self.config.postprocess.mask_threshold)
        for c in range(probs.shape[0]):
            channel = probs[c : c + 1]
            mask, _ = upsampled_labels(
                channel[0] > threshold,
                grid,
                lambda points, maps, ch=channel: interpolate_at(ch, points, maps)[0] > threshold,
            )
            yield c, mask, _scorer(probs[c], channel[0] > threshold, grid)


def _scorer(prob: np.ndarray, low_mask: np.ndarray, grid: tuple[int, int, int]):
    """The class's mean probability over its model-grid voxels; where it has none there (it
    appears only between them), the exact mean over the output mask's voxels."""

    def score(mask_on_grid: np.ndarray) -> float:
        if low_mask.any():
            return float(prob[low_mask].mean(dtype=np.float64))
        maps = AxisMaps(prob.shape, grid)
        return float(interpolate_at(prob[None], np.nonzero(mask_on_grid), maps)[0].mean())

    return score
