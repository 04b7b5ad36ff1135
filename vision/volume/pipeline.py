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

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vision.config import ModelConfig
from vision.errors import ConfigError, InvalidInputError
from vision.masks import RunLengths
from vision.volume.labels import (
    AxisMaps,
    SlabLabels,
    channel_argmax,
    interpolate_at,
    upsampled_labels,
)
from vision.volume.orient import Reorientation
from vision.volume.resample import resample_to_shape, resampled_shape
from vision.volume.tta import Flip, flip_passes
from vision.volume.types import Volume, VolumeMask, VolumeMeta, VolumeResult


@dataclass(frozen=True)
class Normaliser:
    """`config.volume.normalisation` as an affine map with an optional clip, its statistics
    taken once over the whole volume, so it can be applied a slice at a time.

    zscore: (v - mean) / std over the volume; zscore_nonzero: over the voxels != 0, which stay
    0; window: (v - min) / (max - min) clipped to [0, 1]; none: as stored.
    """

    offset: float = 0.0
    scale: float = 1.0
    clip: bool = False
    keep_zero: bool = False

    @classmethod
    def of(cls, voxels: np.ndarray, config: ModelConfig) -> Normaliser:
        """The normalisation of `voxels` (statistics in float64, never a float64 copy)."""
        spec = config.volume
        if spec.normalisation == "window":
            return cls(spec.window_min, 1.0 / (spec.window_max - spec.window_min), clip=True)
        if spec.normalisation == "zscore":
            return cls(float(voxels.mean(dtype=np.float64)), _inverse(voxels.std(dtype=np.float64)))
        if spec.normalisation == "zscore_nonzero":
            chosen = voxels[voxels != 0]
            if not chosen.size:
                return cls(keep_zero=True)
            mean, std = chosen.mean(dtype=np.float64), chosen.std(dtype=np.float64)
            return cls(float(mean), _inverse(std), keep_zero=True)
        return cls()

    def __call__(self, voxels: np.ndarray) -> np.ndarray:
        """A new float32 array of the normalised `voxels` (any shape; integers are cast to
        float32 in one pass first, which is faster than a casting subtraction and gives the
        same values)."""
        if voxels.dtype == np.float32:
            out = np.subtract(voxels, np.float32(self.offset), dtype=np.float32)
        else:
            out = voxels.astype(np.float32)
            out -= np.float32(self.offset)
        out *= np.float32(self.scale)
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        if self.keep_zero:
            out[voxels == 0] = 0.0
        return out


def _inverse(std: float) -> float:
    return 1.0 / float(std) if std else 1.0


def normalise(voxels: np.ndarray, config: ModelConfig) -> np.ndarray:
    """float32 intensities per `config.volume.normalisation` (a new array; see `Normaliser`)."""
    return Normaliser.of(voxels, config)(voxels)


def normalised_on_grid(voxels: np.ndarray, config: ModelConfig, shape: tuple) -> np.ndarray:
    """`normalise(voxels)` linearly resampled to `shape`, normalising a slice at a time right
    before it is resized (no full-size float copy), then along the slices."""
    norm = Normaliser.of(voxels, config)
    if tuple(shape[1:]) == tuple(voxels.shape[1:]):
        return resample_to_shape(norm(voxels), shape, order=1)
    plane = np.empty((voxels.shape[0], *shape[1:]), np.float32)
    fill_planes(plane, voxels, norm, 0, voxels.shape[0])
    return resample_to_shape(plane, shape, order=1) if plane.shape != tuple(shape) else plane


def fill_planes(
    plane: np.ndarray, voxels: np.ndarray, norm: Normaliser, low: int, high: int
) -> None:
    """Slices `low`..`high` of `voxels` normalised and resized in-plane into `plane` [D, H', W']
    (each slice on its own: any run of slices gives the same values)."""
    for k in range(low, high):
        plane[k] = resample_to_shape(norm(voxels[k : k + 1]), (1, *plane.shape[1:]), order=1)[0]


@dataclass
class SlabbedInput:
    """The model input [1, D', H', W'] of a volume whose slices keep their spacing, filled a
    slab of slices at a time (`fill`): the values `VolumePipeline.preprocess` gives, so windows
    over the slices filled can run before the rest is (`VolumePipeline.slabbed_input`)."""

    tensor: np.ndarray
    meta: VolumeMeta
    voxels: np.ndarray  # the canonical voxels [D', H, W]
    norm: Normaliser
    filled: int = 0

    def fill(self, depth: int) -> None:
        """Fill the slices before `depth` (those not filled yet)."""
        if depth > self.filled:
            fill_planes(self.tensor[0], self.voxels, self.norm, self.filled, depth)
            self.filled = depth


def softmax_in_place(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of float32 `logits` [K, ...], overwriting them (two classes: the
    logistic of the difference, the same values)."""
    if logits.shape[0] == 2:
        np.subtract(logits[1], logits[0], out=logits[1])
        sigmoid_in_place(logits[1])
        np.subtract(np.float32(1.0), logits[1], out=logits[0])
        return logits
    top = logits[0].copy()
    for c in range(1, logits.shape[0]):
        np.maximum(top, logits[c], out=top)
    logits -= top
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=0)
    return logits


def sigmoid_in_place(logits: np.ndarray) -> np.ndarray:
    """The logistic function of float32 `logits`, overwriting them (tanh form, stable)."""
    logits *= np.float32(0.5)
    np.tanh(logits, out=logits)
    logits += np.float32(1.0)
    logits *= np.float32(0.5)
    return logits


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
        canonical, meta = self._grid(volume)
        return normalised_on_grid(canonical.voxels, self.config, meta.model_shape)[None], meta

    def slabbed_input(self, volume: Volume) -> SlabbedInput | None:
        """`preprocess`'s input, allocated but not yet filled, when the model's grid keeps the
        slices (the same number, resized in-plane): then each slice of the input comes from
        one slice of the volume, and `SlabbedInput.fill` gives `preprocess`'s values a slab at
        a time. None for a volume resampled across slices or not resized in-plane."""
        canonical, meta = self._grid(volume)
        depth, height, width = meta.model_shape
        if depth != canonical.shape[0] or (height, width) == tuple(canonical.shape[1:]):
            return None
        tensor = np.empty((1, *meta.model_shape), np.float32)
        norm = Normaliser.of(canonical.voxels, self.config)
        return SlabbedInput(tensor, meta, canonical.voxels, norm)

    def _grid(self, volume: Volume) -> tuple[Volume, VolumeMeta]:
        """The volume in the model's orientation, and the model's grid for it."""
        if volume.voxels.ndim != 3 or min(volume.voxels.shape) < 1:
            raise InvalidInputError(f"a volume is [D, H, W], got shape {volume.voxels.shape}")
        code = self.config.volume.orientation
        turn = Reorientation.of(volume.direction, code) if code else None
        canonical = turn.volume(volume) if turn else volume
        target = tuple(float(s) for s in self.config.volume.spacing_mm)
        shape = resampled_shape(canonical.shape, canonical.spacing_mm, target)
        meta = VolumeMeta(
            shape=volume.shape,
            spacing_mm=tuple(float(s) for s in volume.spacing_mm),  # type: ignore[arg-type]
            model_shape=shape,
            model_spacing_mm=target,  # type: ignore[arg-type]
            reorientation=None if turn is None or turn.identity else turn,
        )
        return canonical, meta

    def probabilities(self, output: np.ndarray, in_place: bool = False) -> np.ndarray:
        """Blended model output [K, D', H', W'] as probabilities (softmax or sigmoid);
        `in_place` reuses a float32 `output`'s memory (the caller gives it up)."""
        if output.ndim != 4:
            raise InvalidInputError(f"model output [K, D, H, W] expected, got {output.shape}")
        if output.dtype != np.float32 or not in_place:
            output = output.astype(np.float32, copy=True)
        if self.config.postprocess.type == "argmax" and output.shape[0] > 1:
            return softmax_in_place(output)
        return sigmoid_in_place(output)

    def folds_two_classes(self) -> bool:
        """Whether a two-channel output may be blended as its logit difference alone
        (`Blender.add_difference`): argmax postprocessing, where class 1's probability is the
        logistic of the difference and the argmax its sign."""
        return self.config.postprocess.type == "argmax"

    def difference_probability(self, difference: np.ndarray) -> np.ndarray:
        """Class 1's probability [1, D', H', W'] from a blended logit difference (class 1 minus
        class 0) of a two-class argmax model, overwriting a float32 `difference`."""
        if difference.ndim != 4 or difference.shape[0] != 1:
            raise InvalidInputError(
                f"logit difference [1, D, H, W] expected, got {difference.shape}"
            )
        if difference.dtype != np.float32:
            difference = difference.astype(np.float32)
        return sigmoid_in_place(difference)

    def postprocess_two_classes(self, class1: np.ndarray, meta: VolumeMeta) -> VolumeResult:
        """`postprocess_probabilities` of a two-class argmax model given class 1's (averaged)
        probability [1, D', H', W'] alone; class 0's is 1 minus it, made only when class 0
        gets a mask (`background_class` is not 0). The labels are the same: with p0 = 1 - p1
        in float32, p1 > p0 exactly where p1 > 0.5."""
        if class1.ndim != 4 or class1.shape[0] != 1:
            raise InvalidInputError(
                f"class 1 probabilities [1, D, H, W] expected, got {class1.shape}"
            )
        if self.config.postprocess.background_class != 0:
            both = np.concatenate([np.float32(1.0) - class1, class1])
            return self.postprocess_probabilities(both, meta)
        return self._result(self._class1_masks(class1[0], grid_of(meta)), meta)

    def two_class_slabs(self, meta: VolumeMeta) -> ClassOneSlabs | None:
        """`postprocess_two_classes` a slab at a time (`ClassOneSlabs`), for a one-pass
        two-class argmax model whose class 0 gets no mask; None where that does not apply."""
        if len(self.passes()) != 1 or not self.folds_two_classes():
            return None
        if self.config.postprocess.background_class != 0:
            return None
        return ClassOneSlabs(self, meta)

    def postprocess(self, output: np.ndarray, meta: VolumeMeta) -> VolumeResult:
        """Masks on the original grid from one pass's blended model output [K, D', H', W']."""
        return self.postprocess_probabilities(self.probabilities(output), meta)

    def postprocess_probabilities(self, probs: np.ndarray, meta: VolumeMeta) -> VolumeResult:
        """Masks on the original grid from (averaged) probabilities [K, D', H', W']."""
        if probs.ndim != 4:
            raise InvalidInputError(f"probabilities [K, D, H, W] expected, got {probs.shape}")
        return self._result(self._masks(probs, grid_of(meta)), meta)

    def _result(self, candidates: Iterator[tuple], meta: VolumeMeta) -> VolumeResult:
        """The masks of `candidates` (class id, canonical mask, score function) that are kept,
        mapped back to the volume's orientation."""
        turn = meta.reorientation
        voxel_mm3 = float(np.prod(meta.spacing_mm))
        masks = []
        for class_id, mask, score in candidates:
            count = int(np.count_nonzero(mask))
            if count == 0 or count < self.config.volume.min_voxels:
                continue
            value = score(mask)  # on the canonical grid, before mapping back
            if turn is not None:
                mask = np.ascontiguousarray(turn.undo(mask))
            label = _label(self.config.labels, class_id)
            masks.append(VolumeMask(class_id, label, value, mask, count, count * voxel_mm3))
        return VolumeResult(masks=masks, shape=meta.shape, spacing_mm=meta.spacing_mm)

    def _class1_masks(self, class1: np.ndarray, grid: tuple[int, int, int]) -> Iterator[tuple]:
        """Class 1's candidate mask from its probability [D', H', W'] (p1 > 0.5)."""
        low = np.greater(class1, np.float32(0.5)).view(np.uint8)
        labels, _ = upsampled_labels(low, grid, _above_half_at(class1[None]))
        yield 1, labels.view(bool), _scorer(class1, low.view(bool), grid)

    def _masks(self, probs: np.ndarray, grid: tuple[int, int, int]) -> Iterator[tuple]:
        """(class id, bool mask on the canonical grid, score function) per candidate class."""
        if self.config.postprocess.type == "argmax" and probs.shape[0] > 1:
            low = channel_argmax(probs)
            labels, _ = upsampled_labels(low, grid, _argmax_at(probs))
            binary = probs.shape[0] == 2  # labels are 0 / 1: class 1's mask is a view
            for c in range(probs.shape[0]):
                if c != self.config.postprocess.background_class:
                    mask = labels.view(bool) if binary and c == 1 else labels == c
                    low_mask = low.view(bool) if binary and c == 1 else low == c
                    yield c, mask, _scorer(probs[c], low_mask, grid)
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


class ClassOneSlabs:
    """`difference_probability` then `postprocess_two_classes` of one pass's blended logit
    difference, made a slab of model slices at a time as the slices become final (while
    later windows still run), with the same masks and scores bit for bit.

    `advance(difference, final)` takes the blended difference [1, D', H', W'] (the
    `Blender.view` of the sums: the slices before `final` divided, final) and turns those
    slices into class 1's probability in place (the logistic), their labels (p1 > 0.5) and
    the output slices they decide (`SlabLabels`), the score's per-slice sums and, where the
    volume is in the model's orientation, the run lengths of the output slices made
    (`VolumeMask.run_lengths`); `result` makes the masks once every slice is in.
    """

    def __init__(self, pipeline: VolumePipeline, meta: VolumeMeta) -> None:
        """Plan the slabs of `meta.model_shape` onto the volume's grid."""
        self._pipeline, self._meta = pipeline, meta
        self._grid = grid_of(meta)
        self._low = np.zeros(meta.model_shape, bool)
        self._labels: SlabLabels | None = None
        self._class1: np.ndarray | None = None
        self._done = 0
        self._sums: list[float] = []  # the score's, per model slice advanced
        self._runs = RunLengths() if meta.reorientation is None else None

    @property
    def done(self) -> int:
        """Model slices advanced so far."""
        return self._done

    def advance(self, difference: np.ndarray, final: int) -> None:
        """Postprocess the model slices from `done` to `final` of `difference` (see above)."""
        if difference.ndim != 4 or tuple(difference.shape) != (1, *self._meta.model_shape):
            raise InvalidInputError(
                f"logit difference [1, {self._meta.model_shape}] expected, got {difference.shape}"
            )
        if difference.dtype != np.float32:
            raise InvalidInputError(f"a float32 logit difference, got {difference.dtype}")
        final = min(int(final), self._meta.model_shape[0])
        if final <= self._done:
            return
        slab = difference[:, self._done : final]
        sigmoid_in_place(slab)
        np.greater(slab[0], np.float32(0.5), out=self._low[self._done : final])
        self._sums += _slice_sums(difference[0], self._low, self._done, final)
        if self._class1 is None:
            self._class1 = difference
        elif not _same_array(difference, self._class1):
            raise InvalidInputError("ClassOneSlabs.advance: the same array every slab")
        if self._labels is None:
            exact = _above_half_at(difference)
            self._labels = SlabLabels(self._low.shape, self._grid, exact, np.dtype(np.uint8))
        self._labels.advance(self._low.view(np.uint8), final)
        if self._runs is not None:
            width = self._grid[1] * self._grid[2]
            made = self._runs.size // width
            self._runs.add(self._labels.output_slices(made, self._labels.written))
        self._done = final

    def result(self) -> VolumeResult:
        """The masks (every model slice advanced); the array advanced is now class 1's
        probability [1, D', H', W']."""
        if self._labels is None or self._class1 is None or self._done < self._meta.model_shape[0]:
            raise InvalidInputError(
                f"ClassOneSlabs.result: {self._done} of {self._meta.model_shape[0]} slices in"
            )
        labels, _ = self._labels.result()
        score = _scorer(self._class1[0], self._low, self._grid, self._sums)
        result = self._pipeline._result(iter([(1, labels.view(bool), score)]), self._meta)
        if self._runs is not None:
            for mask in result.masks:  # class 1's alone, in the volume's orientation
                mask.run_lengths = self._runs.counts()
        return result


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `a` and `b` are views of the same memory with the same layout."""
    return a.ctypes.data == b.ctypes.data and a.strides == b.strides and a.shape == b.shape


def grid_of(meta: VolumeMeta) -> tuple[int, int, int]:
    """The volume's grid in the model's (canonical) orientation: where masks are made."""
    turn = meta.reorientation
    return turn.shape(meta.shape) if turn else meta.shape


def _argmax_at(probs: np.ndarray):
    """The exact argmax of `probs` linearly resampled, at boundary voxels (two classes: one
    channel interpolated, class 1 where it is above one half, as argmax breaks ties to 0)."""
    if probs.shape[0] == 2:
        return _above_half_at(probs[1:])

    def labels(points: np.ndarray, maps: AxisMaps) -> np.ndarray:
        return channel_argmax(interpolate_at(probs, points, maps))

    return labels


def _above_half_at(class1: np.ndarray):
    """1 where class 1's probability [1, d, h, w] linearly resampled is above one half, at
    boundary voxels (uint8)."""

    def labels(points: np.ndarray, maps: AxisMaps) -> np.ndarray:
        return (interpolate_at(class1, points, maps)[0] > np.float32(0.5)).astype(np.uint8)

    return labels


def _slice_sums(prob: np.ndarray, low_mask: np.ndarray, start: int, stop: int) -> list[float]:
    """The float64 sums of `prob` [D', H', W'] where `low_mask`, per slice in [start, stop)."""
    return [float(np.sum(prob[k], where=low_mask[k], dtype=np.float64)) for k in range(start, stop)]


def _scorer(
    prob: np.ndarray,
    low_mask: np.ndarray,
    grid: tuple[int, int, int],
    slice_sums: list[float] | None = None,
):
    """The class's mean probability over its model-grid voxels (summed in float64 a slice at
    a time, the slices' sums added exactly: `slice_sums` when they were made slab by slab);
    where it has none there (it appears only between them), the exact mean over the output
    mask's voxels."""

    def score(mask_on_grid: np.ndarray) -> float:
        count = int(np.count_nonzero(low_mask))
        if count:
            sums = slice_sums
            if sums is None:
                sums = _slice_sums(prob, low_mask, 0, prob.shape[0])
            return math.fsum(sums) / count
        maps = AxisMaps(prob.shape, grid)
        points = np.flatnonzero(mask_on_grid)
        return float(interpolate_at(prob[None], points, maps)[0].mean(dtype=np.float64))

    return score
