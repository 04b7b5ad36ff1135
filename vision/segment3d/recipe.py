"""The volumetric reference recipe: network, input canvas, optimiser and split, as plain data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from vision.config import (
    BatchingSpec,
    InputSpec,
    ModelConfig,
    PostprocessSpec,
    PreprocessSpec,
    RuntimeSpec,
    VolumeSpec,
)


@dataclass(frozen=True)
class Recipe3D:
    """Everything that defines a volumetric training run (recorded in the model card).

    `canvas` (z, y, x voxels) is the network's input (the served `volume.patch`): training
    takes a random window of that size from each volume (zero-padded after normalisation where
    the volume is smaller); validation and serving blend overlapping windows (sliding window).
    """

    name: str = "hippocampus"
    dataset: str = "hippocampus"
    labels: tuple[str, ...] = ("background", "anterior", "posterior")
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    norm: str = "instance"
    canvas: tuple[int, int, int] = (32, 48, 32)
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    batch_size: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-5
    minutes: float = 58.0
    val_every: int = 1
    seed: int = 0
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train, val, test of the cases
    # several seeds: one network per seed, trained concurrently, served as the mean of their
    # softmax (`vision.segment3d.ensemble`); empty: one network trained with `seed`
    ensemble_seeds: tuple[int, ...] = ()
    augment: dict[str, Any] = field(
        default_factory=lambda: {
            "flip_axes": [0, 1, 2],
            "intensity_scale": 0.1,
            "intensity_shift": 0.1,
            "noise_std": 0.05,
            "noise_p": 0.2,
        }
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples become lists) for the card and checkpoints."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe3D:
        """Inverse of `to_dict` (unknown keys are errors)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown recipe keys {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# the bundled model: two members (seeds 1 and 2) trained side by side, one core and 58 minutes
# each, chosen on val over the single seed-0 network (docs/volumes.md)
RECIPES = {"hippocampus": Recipe3D(ensemble_seeds=(1, 2))}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_network(recipe: Recipe3D) -> nn.Module:
    """The untrained network of `recipe` (logits, one channel per label): a MONAI 3D U-Net, or
    the softmax mean of one per `ensemble_seeds` when there are several."""
    if len(recipe.ensemble_seeds) > 1:
        from vision.segment3d.ensemble import SoftmaxMean

        return SoftmaxMean([build_unet(recipe) for _ in recipe.ensemble_seeds])
    return build_unet(recipe)


def build_unet(recipe: Recipe3D) -> nn.Module:
    """One untrained MONAI 3D U-Net of `recipe`."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=recipe.in_channels,
        out_channels=len(recipe.labels),
        channels=tuple(recipe.channels),
        strides=tuple(recipe.strides),
        num_res_units=recipe.num_res_units,
        norm=recipe.norm,
    )


def model_config(recipe: Recipe3D, description: str = "") -> ModelConfig:
    """The served `config.yaml` of `recipe`'s model."""
    z, y, x = recipe.canvas
    return ModelConfig(
        name=recipe.name,
        task="volumetric_segmentation",
        labels=tuple(recipe.labels),
        input=InputSpec(
            name="images", layout="NCDHW", height=y, width=x, channels=1, size_divisor=8
        ),
        preprocess=PreprocessSpec(
            resize="none",
            scale=1.0,
            mean=(0.0,),
            std=(1.0,),
            channel_order="GRAY",
            dicom_window=False,
        ),
        postprocess=PostprocessSpec(type="argmax", output="logits"),
        batching=BatchingSpec(max_batch_size=4),
        runtime=RuntimeSpec(allow_spinning=False),
        volume=VolumeSpec(
            spacing_mm=tuple(recipe.spacing_mm),
            patch=(z, y, x),
            overlap=0.5,
            blend="gaussian",
            normalisation="zscore_nonzero",
            orientation="RAS",  # every MSD Task04 case is RAS (nibabel): as training saw them
        ),
        description=description,
    )
