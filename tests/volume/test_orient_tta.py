"""Canonical reorientation (permute / flip only) and test-time mirroring in the volume pipeline.

The reorientation tests use a "model" that is not orientation-invariant (it marks where the
intensity rises along the array's column axis), so a volume stored sagittally gives the same
labels as the axial one only if the pipeline really turns it to the canonical orientation
before the model and maps the masks back.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.serving.volume_series import ellipsoid, mr_series
from vision.config import InputSpec, ModelConfig, PostprocessSpec, VolumeSpec
from vision.errors import InvalidInputError
from vision.volume.orient import Reorientation, orientation_code, parse_code
from vision.volume.pipeline import VolumePipeline
from vision.volume.series import volume_from_datasets
from vision.volume.tta import ProbabilityMean, flip_passes, flip_spatial
from vision.volume.types import Volume
from vision.volume.window import sliding_window

SPACING = (2.0, 1.0, 1.5)
ORIGIN = (-12.0, 30.0, 7.0)
PATCH = (8, 8, 8)


def _axial() -> Volume:
    shape = (12, 20, 16)
    inside = ellipsoid(shape, SPACING, (11.0, 9.5, 11.0), (8.0, 7.0, 8.5))
    return Volume(inside.astype(np.float32), SPACING, ORIGIN, np.eye(3))


def _sagittal(axial: Volume) -> Volume:
    """The same voxels stored sagittally: slices along +x, rows towards the feet (-z),
    columns towards posterior (+y)."""
    d = axial.shape[0]
    voxels = np.ascontiguousarray(axial.voxels.transpose(2, 0, 1)[:, ::-1, :])
    direction = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    origin = axial.position_mm((d - 1, 0, 0))
    spacing = (SPACING[2], SPACING[0], SPACING[1])
    return Volume(voxels, spacing, tuple(origin), direction)


def _config(orientation: str = "", flips: tuple = ()) -> ModelConfig:
    return ModelConfig(
        name="phantom",
        task="volumetric_segmentation",
        labels=("background", "rising"),
        input=InputSpec(layout="NCDHW", channels=1),
        postprocess=PostprocessSpec(type="argmax"),
        volume=VolumeSpec(
            spacing_mm=(1.0, 1.0, 1.0),
            patch=PATCH,
            overlap=0.5,
            normalisation="none",
            orientation=orientation,
            tta_flips=flips,
        ),
    )


def _rising_along_columns(batch: np.ndarray) -> np.ndarray:
    """Logits [N, 2, ...]: class 1 where the intensity rises towards the next column."""
    x = batch[:, 0]
    rise = np.zeros_like(x)
    rise[..., :-1] = x[..., 1:] - x[..., :-1]
    return np.stack([np.full_like(x, 0.1), rise], axis=1) * 10.0


def _labels(volume: Volume, config: ModelConfig) -> np.ndarray:
    pipeline = VolumePipeline(config)
    tensor, meta = pipeline.preprocess(volume)
    mean = ProbabilityMean()
    for axes in pipeline.passes():
        flipped = flip_spatial(tensor, axes)
        logits = sliding_window(flipped, PATCH, 0.5, _rising_along_columns, 4)
        mean.add(pipeline.probabilities(logits), axes)
    result = pipeline.postprocess_probabilities(mean.result(), meta)
    labels = np.zeros(volume.shape, np.uint8)
    for mask in result.masks:
        assert mask.mask.shape == volume.shape
        labels[mask.mask] = mask.class_id
    return labels


def _on_axial_grid(sagittal_labels: np.ndarray) -> np.ndarray:
    """Inverse of `_sagittal`'s voxel move."""
    return sagittal_labels[:, ::-1, :].transpose(1, 2, 0)


def test_codes_and_the_closest_axes() -> None:
    assert orientation_code(np.eye(3)) == "LPS"
    assert orientation_code(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    assert orientation_code(_sagittal(_axial()).direction) == "PIL"
    assert parse_code("ras") == ((0, -1), (1, -1), (2, 1))
    with pytest.raises(InvalidInputError, match="one of L/R, P/A, S/I"):
        parse_code("LLS")


def test_sagittal_volume_turned_to_lps_is_the_axial_volume() -> None:
    axial = _axial()
    sagittal = _sagittal(axial)
    # The construction is right: the same voxel sits at the same patient position.
    assert np.allclose(sagittal.position_mm((3, 4, 5)), axial.position_mm((11 - 4, 5, 3)))
    turn = Reorientation.of(sagittal.direction, "LPS")
    canonical = turn.volume(sagittal)
    assert np.array_equal(canonical.voxels, axial.voxels)
    assert canonical.spacing_mm == pytest.approx(SPACING)
    assert np.allclose(canonical.origin_mm, ORIGIN)
    assert np.allclose(canonical.direction, np.eye(3))
    assert np.array_equal(turn.undo(canonical.voxels), sagittal.voxels)
    assert Reorientation.of(np.eye(3), "LPS").identity


def test_sagittal_and_axial_give_the_same_labels_when_reoriented() -> None:
    axial = _axial()
    sagittal = _sagittal(axial)
    reference = _labels(axial, _config("LPS"))
    assert reference.any() and not reference.all()
    turned = _labels(sagittal, _config("LPS"))
    assert np.array_equal(_on_axial_grid(turned), reference)
    # Without reorientation the model sees other axes and marks other voxels.
    stored = _labels(sagittal, _config(""))
    assert not np.array_equal(_on_axial_grid(stored), reference)


def test_oblique_dicom_series_in_two_orientations_agree() -> None:
    """An axial-ish and a sagittal-ish DICOM series of one phantom (slightly oblique)."""
    tilt = 0.05
    shape, spacing = (10, 18, 14), (2.0, 1.0, 1.0)
    phantom = ellipsoid(shape, spacing, (9.0, 8.5, 6.5), (7.0, 6.0, 5.0)).astype(np.int16)
    axial_rows = np.array([[1.0, tilt, 0.0], [-tilt, 1.0, 0.0]])
    axial_rows /= np.linalg.norm(axial_rows, axis=1, keepdims=True)
    axial = volume_from_datasets(mr_series(phantom, spacing, orientation=axial_rows))
    # The same voxels stored sagittally: columns against the axial rows, rows against the
    # slices, slices along the axial columns (a right-handed series: the normal is +columns).
    sag_voxels = np.ascontiguousarray(phantom.transpose(2, 0, 1)[:, ::-1, ::-1])
    rows = np.stack([-axial.direction[1], -axial.direction[2]])
    origin = axial.position_mm((shape[0] - 1, shape[1] - 1, 0))
    sag_spacing = (spacing[2], spacing[0], spacing[1])
    sag = volume_from_datasets(mr_series(sag_voxels, sag_spacing, tuple(origin), rows))
    assert np.allclose(sag.direction[2], axial.direction[0])
    assert np.array_equal(sag.voxels, sag_voxels)
    config = _config("LPS")
    reference = _labels(axial, config)
    assert reference.any()
    back = _labels(sag, config)[:, ::-1, ::-1].transpose(1, 2, 0)
    assert np.array_equal(back, reference)


def test_flip_passes_and_probability_mean() -> None:
    assert flip_passes([]) == [()]
    assert flip_passes([[2], [0], [2, 0], [0, 2]]) == [(), (2,), (0,), (0, 2)]
    with pytest.raises(InvalidInputError, match="axes from 0"):
        flip_passes([[3]])
    rng = np.random.default_rng(0)
    probs = rng.random((2, 4, 5, 6), dtype=np.float32)
    mean = ProbabilityMean()
    mean.add(probs.copy(), ())
    mean.add(np.flip(probs, (1, 3)).copy(), (0, 2))  # a flip-equivariant pass
    assert np.allclose(mean.result(), probs)
    other = ProbabilityMean()
    first, second = rng.random((2, 2, 4, 5, 6), dtype=np.float32)
    other.add(first.copy(), ())
    other.add(second.copy(), (1,))
    assert np.allclose(other.result(), (first + np.flip(second, 2)) / 2)


def test_mirroring_averages_the_flipped_passes() -> None:
    """With tta_flips the labels are those of the mean of the un-flipped passes."""
    volume = _axial()
    plain = _labels(volume, _config("", ()))
    mirrored = _labels(volume, _config("", ((2,),)))
    # Rising along columns flipped along the columns is falling: the passes disagree.
    assert not np.array_equal(plain, mirrored)
    pipeline = VolumePipeline(_config("", ((2,),)))
    tensor, meta = pipeline.preprocess(volume)
    first = pipeline.probabilities(sliding_window(tensor, PATCH, 0.5, _rising_along_columns))
    flipped = sliding_window(flip_spatial(tensor, (2,)), PATCH, 0.5, _rising_along_columns)
    second = np.flip(pipeline.probabilities(flipped), 3)
    expected = pipeline.postprocess_probabilities((first + second) / 2, meta)
    labels = np.zeros(volume.shape, np.uint8)
    for mask in expected.masks:
        labels[mask.mask] = mask.class_id
    assert np.array_equal(mirrored, labels)
