"""DICOM series -> Volume: geometry, rescale, Enhanced MR, every refusal, phantom volumes."""

from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from tests.volume.phantoms import INSIDE, OUTSIDE, Phantom, enhanced_mr, mr_series, without
from vision.config import InputSpec, ModelConfig, PostprocessSpec, VolumeSpec
from vision.errors import ImageTooLargeError, InvalidInputError
from vision.volume.pipeline import VolumePipeline
from vision.volume.resample import resample, resample_to_shape
from vision.volume.series import volume_from_datasets

PHANTOM = Phantom()


@pytest.fixture(scope="module")
def series() -> list[pydicom.Dataset]:
    return mr_series(PHANTOM)


def _written(series: list[pydicom.Dataset], folder) -> list[pydicom.Dataset]:
    paths = []
    for i, ds in enumerate(series):
        path = folder / f"im{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return [pydicom.dcmread(p) for p in paths]


def test_series_geometry_and_rescale(series, tmp_path) -> None:
    volume = volume_from_datasets(_written(series, tmp_path))
    assert volume.shape == PHANTOM.shape
    np.testing.assert_allclose(volume.spacing_mm, PHANTOM.spacing, atol=1e-5)
    np.testing.assert_allclose(volume.direction, PHANTOM.direction, atol=1e-6)
    np.testing.assert_allclose(volume.origin_mm, PHANTOM.origin, atol=1e-5)
    np.testing.assert_allclose(volume.voxels, PHANTOM.stored() * 0.5 - 50.0, atol=1e-4)
    index = np.array([3.0, 10.0, 7.0])  # slice, row, column
    expected = PHANTOM.origin + index[::-1] * PHANTOM.spacing[::-1] @ PHANTOM.direction
    np.testing.assert_allclose(volume.position_mm(tuple(index)), expected, atol=1e-5)
    assert [h.image_position_patient for h in volume.slices] == sorted(
        (h.image_position_patient for h in volume.slices),
        key=lambda p: float(np.dot(p, PHANTOM.direction[2])),
    )
    assert len({uid for uid, _ in volume.source_frames}) == PHANTOM.shape[0]
    assert volume.voxel_volume_mm3() == pytest.approx(np.prod(PHANTOM.spacing))


def test_written_headers_are_valid(series, tmp_path) -> None:
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmdump (dcmtk) is not installed")
    _written(series[:1], tmp_path)
    dump = subprocess.run(["dcmdump", str(tmp_path / "im000.dcm")], capture_output=True, text=True)
    assert dump.returncode == 0 and "ImagePositionPatient" in dump.stdout
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    check = subprocess.run(
        ["dciodvfy", str(tmp_path / "im000.dcm")], capture_output=True, text=True
    )
    errors = [line for line in check.stderr.splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_reversed_and_shuffled_orders_give_the_same_volume(series) -> None:
    forward = volume_from_datasets(series)
    backward = volume_from_datasets(series[::-1])
    np.testing.assert_array_equal(forward.voxels, backward.voxels)
    assert forward.origin_mm == backward.origin_mm


def test_enhanced_multiframe_matches_the_single_frame_series(series) -> None:
    single = volume_from_datasets(series)
    enhanced = volume_from_datasets([enhanced_mr(PHANTOM, seed=5)])
    np.testing.assert_array_equal(enhanced.voxels, single.voxels)
    np.testing.assert_allclose(enhanced.spacing_mm, single.spacing_mm, atol=1e-6)
    np.testing.assert_allclose(enhanced.direction, single.direction, atol=1e-9)
    frames = [number for _, number in enhanced.source_frames]
    assert sorted(frames) == list(range(1, PHANTOM.shape[0] + 1)) and frames != sorted(frames)


def test_single_slice_uses_thickness_and_says_so(series) -> None:
    volume = volume_from_datasets(series[:1])
    assert volume.shape[0] == 1 and volume.spacing_mm[0] == pytest.approx(2.0)
    assert "SliceThickness" in volume.notes[0]
    volume = volume_from_datasets([without(series[0], "SliceThickness")])
    assert volume.spacing_mm[0] == 1.0 and "1 mm" in volume.notes[0]


def _modified(series, index: int, **values) -> list[pydicom.Dataset]:
    out = list(series)
    out[index] = copy.deepcopy(series[index])
    for keyword, value in values.items():
        setattr(out[index], keyword, value)
    return out


def _by_position(series) -> list[pydicom.Dataset]:
    return sorted(
        series, key=lambda ds: float(np.dot(ds.ImagePositionPatient, PHANTOM.direction[2]))
    )


def _tilted(series) -> list[pydicom.Dataset]:
    out = []
    for k, ds in enumerate(_by_position(series)):
        ds = copy.deepcopy(ds)
        shift = np.asarray(ds.ImagePositionPatient) + 0.4 * k * PHANTOM.direction[1]
        ds.ImagePositionPatient = [float(v) for v in shift]
        out.append(ds)
    return out


def _refusals(series) -> dict[str, tuple[list[pydicom.Dataset], str]]:
    ordered = _by_position(series)
    other = copy.deepcopy(ordered[3])
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    small = copy.deepcopy(ordered[2])
    small.Rows, small.PixelData = 32, small.PixelData[: 32 * small.Columns * 2]
    iop = list(ordered[4].ImageOrientationPatient)
    return {
        "gap": (ordered[:10] + ordered[11:], "gap or uneven spacing"),
        "duplicate": (ordered + [other], "duplicated position"),
        "orientation": (
            _modified(ordered, 4, ImageOrientationPatient=iop[3:] + iop[:3]),
            "mixed orientations",
        ),
        "tilt": (_tilted(series), "gantry tilt"),
        "size": (ordered[:2] + [small] + ordered[3:], "different sizes"),
        "ipp": (
            ordered[:5] + [without(ordered[5], "ImagePositionPatient")] + ordered[6:],
            "no ImagePositionPatient",
        ),
        "iop": (
            [without(ordered[0], "ImageOrientationPatient")] + ordered[1:],
            "no ImageOrientationPatient",
        ),
        "spacing": ([without(ordered[0], "PixelSpacing")] + ordered[1:], "no PixelSpacing"),
        "series": (
            _modified(ordered, 7, SeriesInstanceUID=pydicom.uid.generate_uid()),
            "SeriesInstanceUIDs",
        ),
        "frame": (
            _modified(ordered, 7, FrameOfReferenceUID=pydicom.uid.generate_uid()),
            "FrameOfReferenceUIDs",
        ),
        "pixel spacing": (_modified(ordered, 1, PixelSpacing=[1.0, 1.0]), "different PixelSpacing"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "gap",
        "duplicate",
        "orientation",
        "tilt",
        "size",
        "ipp",
        "iop",
        "spacing",
        "series",
        "frame",
        "pixel spacing",
    ],
)
def test_refusals_name_the_problem(series, case) -> None:
    datasets, message = _refusals(series)[case]
    with pytest.raises(InvalidInputError, match=message) as caught:
        volume_from_datasets(datasets)
    text = str(caught.value)
    assert "1.2.826" not in text and "2.25." not in text  # no UID in the message
    if case in ("gap", "duplicate"):
        assert " mm" in text and "instance" in text  # the positions and which instances


def test_no_instances_and_too_many_voxels(series) -> None:
    with pytest.raises(InvalidInputError, match="no instances"):
        volume_from_datasets([])
    with pytest.raises(ImageTooLargeError, match="limit"):
        volume_from_datasets(series, max_voxels=1000)


def _config(spacing=(1.0, 1.0, 1.0)) -> ModelConfig:
    return ModelConfig(
        name="phantom",
        task="volumetric_segmentation",
        labels=("background", "ellipsoid"),
        input=InputSpec(layout="NCDHW", channels=1),
        postprocess=PostprocessSpec(type="argmax"),
        volume=VolumeSpec(
            spacing_mm=spacing, normalisation="window", window_min=OUTSIDE, window_max=INSIDE
        ),
    )


def test_phantom_volume_within_two_percent_through_isotropic_and_back(series) -> None:
    volume = volume_from_datasets(series)
    pipeline = VolumePipeline(_config())
    tensor, meta = pipeline.preprocess(volume)
    assert meta.model_shape == tensor.shape[1:] == (75, 58, 62)
    inside = tensor[0] - 0.5  # a "model" that thresholds: logits of background and ellipsoid
    result = pipeline.postprocess(np.stack([-inside, inside]) * 40.0, meta)
    (mask,) = result.masks
    assert mask.label == "ellipsoid" and mask.mask.shape == PHANTOM.shape
    assert mask.volume_mm3 == pytest.approx(PHANTOM.volume_mm3, rel=0.02)
    assert mask.voxel_count * volume.voxel_volume_mm3() == pytest.approx(mask.volume_mm3)


def test_resample_round_trip_keeps_labels_and_shapes() -> None:
    labels = np.zeros((6, 10, 8), np.uint8)
    labels[2:4, 3:7, 2:6] = 2
    up = resample(labels, (3.0, 1.0, 1.0), (1.0, 1.0, 1.0), order=0)
    assert up.shape == (18, 10, 8) and up.dtype == np.uint8 and set(np.unique(up)) == {0, 2}
    back = resample_to_shape(up, labels.shape, order=0)
    np.testing.assert_array_equal(back, labels)
    probs = resample_to_shape(np.stack([labels, 2 - labels]).astype(np.float32), (12, 5, 16), 1)
    assert probs.shape == (2, 12, 5, 16) and probs.dtype == np.float32
