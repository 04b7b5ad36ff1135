"""Burned-in text refused or blanked; pixels untouched when nothing is blanked."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deid.helpers import KEY, fundus, sample_file
from vision.deid import DeidOptions, DeidRefusedError, RegionRule, Regions, deidentify
from vision.errors import ConfigError


@pytest.mark.parametrize("modality", ["US", "SC", "OT", "ES", "XC"])
def test_modalities_known_to_burn_in_text_are_refused(modality: str) -> None:
    ds = fundus()
    ds.Modality = modality
    with pytest.raises(DeidRefusedError, match=f"modality {modality}.*--regions"):
        deidentify(ds, DeidOptions(), KEY)


def test_burned_in_annotation_yes_is_refused_and_a_region_blanks_it() -> None:
    ds = fundus()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidRefusedError, match="BurnedInAnnotation is YES"):
        deidentify(ds, DeidOptions(), KEY)
    rule = RegionRule(((0, 0, 20, 10),), modality="OP", rows=64, columns=80)
    result = deidentify(ds, DeidOptions(regions=Regions((rule,))), KEY)
    before, after = ds.pixel_array, result.dataset.pixel_array
    assert not after[0:10, 0:20].any() and before[0:10, 0:20].any()
    assert np.array_equal(after[10:], before[10:]) and np.array_equal(after[:, 20:], before[:, 20:])
    assert result.dataset.BurnedInAnnotation == "NO"
    assert result.report.pixels == "blanked" and result.report.blanked == [[0, 0, 20, 10]]
    assert not result.report.decompressed


def test_a_rule_for_another_size_does_not_apply() -> None:
    ds = fundus()
    ds.Modality = "US"
    rule = RegionRule(((0, 0, 5, 5),), modality="US", rows=480, columns=640)
    with pytest.raises(DeidRefusedError):
        deidentify(ds, DeidOptions(regions=Regions((rule,))), KEY)


def test_compressed_pixels_are_decoded_blanked_and_written_uncompressed() -> None:
    ds = sample_file("MR_small_RLE.dcm")
    ds.BurnedInAnnotation = "YES"
    original = ds.pixel_array.copy()
    rule = RegionRule(((0, 0, 8, 4),))
    result = deidentify(ds, DeidOptions(regions=Regions((rule,))), KEY)
    out = result.dataset
    assert result.report.decompressed and not out.file_meta.TransferSyntaxUID.is_compressed
    assert not out.pixel_array[0:4, 0:8].any()
    assert np.array_equal(out.pixel_array[4:], original[4:])


def test_pixels_unchanged_when_nothing_is_blanked() -> None:
    for ds in (sample_file("CT_small.dcm"), sample_file("MR_small.dcm"), fundus()):
        out = deidentify(ds, DeidOptions(), KEY)
        assert out.dataset.PixelData == ds.PixelData  # byte-equal
        assert out.report.pixels == "unchanged"
    rgb_jpeg = sample_file("SC_rgb_jpeg.dcm")  # pydicom's RGB JPEG, as a non-burned-in class
    rgb_jpeg.Modality, rgb_jpeg.SOPClassUID = "OP", "1.2.840.10008.5.1.4.1.1.77.1.5.1"
    for ds in (sample_file("MR_small_RLE.dcm"), rgb_jpeg):
        syntax = ds.file_meta.TransferSyntaxUID
        assert syntax.is_compressed
        out = deidentify(ds, DeidOptions(), KEY).dataset
        assert out.PixelData == ds.PixelData and out.file_meta.TransferSyntaxUID == syntax
        assert np.array_equal(out.pixel_array, ds.pixel_array)  # decoded-equal


def test_documents_are_always_refused() -> None:
    ds = fundus()
    ds.Modality = "DOC"
    with pytest.raises(DeidRefusedError, match="encapsulated document"):
        deidentify(ds, DeidOptions(regions=Regions((RegionRule(((0, 0, 1, 1),)),))), KEY)


def test_regions_file_errors_say_the_fix(tmp_path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("regions:\n  - modality: US\n")
    with pytest.raises(ConfigError, match="boxes"):
        Regions.load(bad)
    bad.write_text("regions:\n  - boxes: [[5, 0, 2, 3]]\n")
    with pytest.raises(ConfigError, match="x1 < x2"):
        Regions.load(bad)
    good = tmp_path / "r.json"
    good.write_text('{"regions": [{"modality": "US", "rows": 480, "columns": 640, '
                    '"boxes": [[0, 0, 640, 40]]}]}')  # fmt: skip
    assert Regions.load(good).rules[0].boxes == ((0, 0, 640, 40),)
