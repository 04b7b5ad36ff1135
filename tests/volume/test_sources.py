"""NIfTI and raw volumes: orientation conventions, round trips, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from vision.errors import ImageTooLargeError, InvalidInputError
from vision.paths import datasets_root
from vision.volume.sources import volume_from_nifti, volume_from_raw, volume_to_nifti

nibabel = pytest.importorskip("nibabel")


def _hippocampus():
    folder = datasets_root() / "hippocampus" / "imagesTr"
    files = sorted(folder.glob("*.nii.gz")) if folder.is_dir() else []
    if not files:
        pytest.skip(f"no hippocampus volumes under {folder} (MSD Task04); NIfTI test skipped")
    return files[0]


def test_nifti_axes_and_lps_affine() -> None:
    path = _hippocampus()
    image = nibabel.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    volume = volume_from_nifti(path)
    assert volume.shape == data.shape[::-1]
    np.testing.assert_array_equal(volume.voxels[2, 5, 7], data[7, 5, 2])
    ras = image.affine @ np.array([7, 5, 2, 1.0])
    lps = volume.position_mm((2, 5, 7))
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-5)
    np.testing.assert_allclose(volume.spacing_mm, image.header.get_zooms()[:3][::-1], atol=1e-5)


def test_nifti_round_trip(tmp_path) -> None:
    volume = volume_from_nifti(_hippocampus())
    again = volume_from_nifti(volume_to_nifti(volume, tmp_path / "copy.nii.gz"))
    np.testing.assert_array_equal(again.voxels, volume.voxels)
    np.testing.assert_allclose(again.affine(), volume.affine(), atol=1e-5)


def test_raw_volume_and_its_checks() -> None:
    values = np.arange(2 * 3 * 4, dtype="<i2").reshape(2, 3, 4) - 5
    rotation = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    volume = volume_from_raw(
        values.tobytes(), (2, 3, 4), "int16", (2.0, 0.5, 0.5), (1, 2, 3), rotation
    )
    np.testing.assert_array_equal(volume.voxels, values.astype(np.float32))
    np.testing.assert_allclose(volume.position_mm((1, 0, 2)), [1.0, 3.0, 1.0])
    with pytest.raises(InvalidInputError, match="expected 48"):
        volume_from_raw(b"\0" * 10, (2, 3, 4), "int16", (1, 1, 1))
    with pytest.raises(InvalidInputError, match="dtype"):
        volume_from_raw(b"\0" * 24, (2, 3, 4), "int64", (1, 1, 1))
    with pytest.raises(InvalidInputError, match="orthonormal"):
        volume_from_raw(b"\0" * 24, (2, 3, 4), "uint8", (1, 1, 1), direction=np.ones((3, 3)))
    with pytest.raises(InvalidInputError, match="spacing"):
        volume_from_raw(b"\0" * 24, (2, 3, 4), "uint8", (1, 0, 1))
    with pytest.raises(ImageTooLargeError, match="limit"):
        volume_from_raw(b"", (2000, 2000, 2000), "uint8", (1, 1, 1), max_voxels=10**6)
