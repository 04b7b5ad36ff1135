"""The torch Dataset of training windows: random placement or crop, flips, intensity jitter."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from vision.segment3d.data import Case, centre_offsets, place
from vision.segment3d.recipe import Recipe3D


class VolumeDataset(Dataset):
    """Random canvas-sized windows of the volumes (padded where smaller); `augment` draws the
    placement, flips and intensity changes from a per-epoch seeded generator (deterministic)."""

    def __init__(self, cases: list[Case], recipe: Recipe3D, augment: bool, seed: int = 0):
        self.cases, self.recipe, self.augment = cases, recipe, augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        case = self.cases[index]
        image, labels = case.image, case.labels
        offsets = centre_offsets(image.shape, self.recipe.canvas)
        if self.augment:
            image, labels, offsets = self._augmented(image, labels)
        image = place(image.astype(np.float32), self.recipe.canvas, offsets)
        labels = place(labels, self.recipe.canvas, offsets)
        return torch.from_numpy(image[None].copy()), torch.from_numpy(labels[None].copy())

    def _augmented(
        self, image: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        spec, rng = self.recipe.augment, self.rng
        for axis in spec.get("flip_axes", []):
            if rng.random() < 0.5:
                image, labels = np.flip(image, axis), np.flip(labels, axis)
        mask = image != 0
        scale = 1.0 + rng.uniform(-1, 1) * spec.get("intensity_scale", 0.0)
        shift = rng.uniform(-1, 1) * spec.get("intensity_shift", 0.0)
        image = np.where(mask, image * scale + shift, 0.0)
        if rng.random() < spec.get("noise_p", 0.0):
            image = image + mask * rng.normal(0, spec.get("noise_std", 0.0), image.shape)
        room = [c - s for s, c in zip(image.shape, self.recipe.canvas, strict=True)]
        offsets = tuple(int(rng.integers(min(r, 0), max(r, 0) + 1)) for r in room)
        return image, labels, offsets
