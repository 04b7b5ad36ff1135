"""Routing rules: each condition, file order, the bundled rules, schema errors, check-rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app.cli import main as vision_main
from dicom_node.cli import check_rules
from dicom_node.cli import main as node_main
from dicom_node.routing import BUNDLED_RULES, RULE_ATTRIBUTES, RoutingRules
from vision.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
OP_8BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
OP_16BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.2"
VL_MICROSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.2"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT = "1.2.840.10008.5.1.4.1.1.2"
PATIENT_NAME = "Routingpatient^Secret"
PATIENT_ID = "PID-ROUTE-4711"


def dataset(sop_class: str = OP_8BIT, **attributes: object) -> Dataset:
    """A header-only object of `sop_class` with a fake patient and the given attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19500101"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def fundus(**attributes: object) -> Dataset:
    defaults = {"Modality": "OP", "PhotometricInterpretation": "RGB", "SamplesPerPixel": 3}
    return dataset(OP_8BIT, **{**defaults, **attributes})


def rules(*items: dict, known: set[str] | None = None) -> RoutingRules:
    return RoutingRules.parse({"rules": list(items)}, "test.yaml", known_models=known)


def rule(**conditions: object) -> dict:
    return {"name": "r", "models": ["m"], **conditions}


def test_modality_condition():
    r = rules(rule(modality=["op", "XC"]))
    assert r.match(fundus()) is not None
    route = r.match(fundus())
    assert route.rule == "r" and route.models == ("m",)
    assert "Modality 'OP' is one of ['OP', 'XC']" in route.reasons
    assert r.match(fundus(Modality="CT")) is None
    assert r.match(dataset(VL_MICROSCOPIC)) is None  # absent


def test_sop_class_by_keyword_or_uid_and_from_file_meta():
    by_name = rules(rule(sop_class=["OphthalmicPhotography16BitImageStorage"]))
    by_uid = rules(rule(sop_class=[OP_8BIT]))
    assert by_name.rules[0].sop_class == (OP_16BIT,)
    assert by_name.match(dataset(OP_16BIT)) is not None
    assert by_name.match(dataset(OP_8BIT)) is None
    assert by_uid.match(dataset(OP_8BIT)) is not None
    no_sop_class = dataset(OP_8BIT)
    del no_sop_class.SOPClassUID  # read from the file meta instead
    assert by_uid.match(no_sop_class) is not None
    reasons = by_uid.match(dataset(OP_8BIT)).reasons
    assert reasons == (
        f"SOPClassUID {OP_8BIT} (Ophthalmic Photography 8 Bit Image Storage) is one of "
        "['Ophthalmic Photography 8 Bit Image Storage']",
    )


def test_body_part_is_case_insensitive():
    r = rules(rule(body_part=["eye"]))
    assert r.match(fundus(BodyPartExamined="EYE")) is not None
    assert r.match(fundus(BodyPartExamined="CHEST")) is None
    assert r.match(fundus()) is None


def test_series_description_regex():
    r = rules(rule(series_description="(?i)^pcb line [0-9]+$"))
    assert r.match(dataset(SECONDARY_CAPTURE, SeriesDescription="PCB line 3")) is not None
    assert r.match(dataset(SECONDARY_CAPTURE, SeriesDescription="pcb line three")) is None
    assert r.match(dataset(SECONDARY_CAPTURE)) is None


def test_image_type_include_and_exclude():
    r = rules(rule(image_type={"include": ["original"], "exclude": ["LOCALIZER"]}))
    assert r.match(fundus(ImageType=["ORIGINAL", "PRIMARY"])) is not None
    assert r.match(fundus(ImageType=["DERIVED", "PRIMARY"])) is None
    assert r.match(fundus(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])) is None
    assert r.match(fundus()) is None  # include needs it present
    only_exclude = rules(rule(image_type={"exclude": ["LOCALIZER"]}))
    assert only_exclude.match(fundus()) is not None


def test_numeric_ranges():
    r = rules(rule(ranges={"SliceThickness": [0.5, 5], "Rows": [256, None]}))
    assert r.match(dataset(CT, SliceThickness="2.5", Rows=512)) is not None
    assert r.match(dataset(CT, SliceThickness="0.5", Rows=256)) is not None  # inclusive
    assert r.match(dataset(CT, SliceThickness="7.5", Rows=512)) is None
    assert r.match(dataset(CT, SliceThickness="2.5", Rows=128)) is None
    assert r.match(dataset(CT, Rows=512)) is None  # absent
    reasons = r.match(dataset(CT, SliceThickness="2.5", Rows=512)).reasons
    assert reasons == ("SliceThickness 2.5 is within [0.5, 5]", "Rows 512 is within [256, inf]")


def test_ranges_check_every_value_and_the_shared_functional_groups():
    r = rules(rule(ranges={"PixelSpacing": [None, 0.5]}))
    assert r.match(dataset(CT, PixelSpacing=["0.4", "0.4"])) is not None
    assert r.match(dataset(CT, PixelSpacing=["0.4", "0.6"])) is None
    measures = Dataset()
    measures.PixelSpacing = ["0.3", "0.3"]
    group = Dataset()
    group.PixelMeasuresSequence = Sequence([measures])
    enhanced = dataset(CT, SharedFunctionalGroupsSequence=Sequence([group]))
    assert r.match(enhanced) is not None


def test_photometric_condition():
    r = rules(rule(photometric=["RGB", "YBR_FULL_422"]))
    assert r.match(fundus()) is not None
    assert r.match(fundus(PhotometricInterpretation="YBR_FULL_422")) is not None
    assert r.match(fundus(PhotometricInterpretation="MONOCHROME2")) is None


def test_every_condition_must_hold():
    r = rules(rule(modality=["OP"], photometric=["RGB"]))
    ok, reasons = r.rules[0].evaluate(fundus(PhotometricInterpretation="MONOCHROME2"))
    assert not ok
    assert reasons == [
        "Modality 'OP' is one of ['OP']",
        "PhotometricInterpretation 'MONOCHROME2' is not one of ['RGB']",
    ]


def test_first_matching_rule_in_file_order_wins():
    r = rules(
        {"name": "narrow", "models": ["a"], "modality": ["CT"]},
        {"name": "first-broad", "models": ["b"], "sop_class": [OP_8BIT]},
        {"name": "second-broad", "models": ["c"], "modality": ["OP"]},
    )
    route = r.match(fundus())
    assert (route.rule, route.models) == ("first-broad", ("b",))
    explained = r.explain(fundus())
    assert [(x.name, matched) for x, matched, _ in explained] == [
        ("narrow", False),
        ("first-broad", True),
        ("second-broad", True),
    ]


def test_a_rule_without_conditions_matches_everything():
    route = rules(rule()).match(dataset(CT))
    assert route is not None and route.reasons == ("no conditions: matches every object",)


# --- bundled rules -------------------------------------------------------------------------


def repository_models() -> set[str]:
    return {p.parent.name for p in (ROOT / "models").glob("*/config.yaml")}


@pytest.fixture(scope="module")
def bundled() -> RoutingRules:
    return RoutingRules.load(None, known_models=repository_models())


def test_bundled_rules_route_ophthalmic_photography_to_retina_vessels(bundled):
    assert bundled.match(fundus()).models == ("retina-vessels",)
    sixteen = dataset(OP_16BIT, Modality="OP", PhotometricInterpretation="RGB")
    assert bundled.match(sixteen).models == ("retina-vessels",)
    jpeg = fundus(PhotometricInterpretation="YBR_FULL_422")
    assert bundled.match(jpeg).models == ("retina-vessels",)


def test_bundled_rules_route_vl_microscopic_to_blood_cells(bundled):
    smear = dataset(VL_MICROSCOPIC, Modality="GM", PhotometricInterpretation="RGB")
    assert bundled.match(smear).models == ("blood-cells",)


def test_bundled_rules_route_industrial_images_by_series_description(bundled):
    pcb = dataset(SECONDARY_CAPTURE, Modality="OT", SeriesDescription="Line 2 PCB top side")
    tile = dataset(VL_PHOTOGRAPHIC, Modality="XC", SeriesDescription="magnetic TILE batch 7")
    plain = dataset(SECONDARY_CAPTURE, Modality="OT", SeriesDescription="screenshot")
    assert bundled.match(pcb).models == ("pcb-defects",)
    assert bundled.match(tile).models == ("tile-defects",)
    assert bundled.match(plain) is None


def test_bundled_rules_set_aside_what_no_model_suits(bundled):
    assert bundled.match(dataset(CT, Modality="CT")) is None
    red_free = fundus(PhotometricInterpretation="MONOCHROME2", SamplesPerPixel=1)
    assert bundled.match(red_free) is None


def test_bundled_rules_keep_only_rules_for_the_repositorys_models():
    medical = RoutingRules.load(None, known_models={"retina-vessels", "blood-cells"})
    assert [r.name for r in medical.rules] == ["fundus-photography", "blood-smear-microscopy"]
    pcb = dataset(SECONDARY_CAPTURE, Modality="OT", SeriesDescription="PCB")
    assert medical.match(pcb) is None
    with pytest.raises(ConfigError, match="has none of the models these rules route to"):
        RoutingRules.load(None, known_models={"lung-nodules"})


def test_bundled_rules_file_is_in_the_package():
    assert BUNDLED_RULES.parent.name == "dicom_node" and BUNDLED_RULES.is_file()


# --- privacy -------------------------------------------------------------------------------


def test_reasons_never_quote_patient_attributes_or_free_text():
    ds = fundus(SeriesDescription=f"fundus of {PATIENT_NAME} {PATIENT_ID}", BodyPartExamined="EYE")
    every = rules(
        {
            "name": "all",
            "models": ["m"],
            "modality": ["OP"],
            "sop_class": [OP_8BIT],
            "body_part": ["EYE"],
            "series_description": "(?i)fundus",
            "image_type": {"exclude": ["LOCALIZER"]},
            "ranges": {"SamplesPerPixel": [1, 3]},
            "photometric": ["RGB"],
        },
        {"name": "miss", "models": ["m"], "series_description": "nothing"},
    )
    text = repr(every.explain(ds)) + repr(every.match(ds))
    for secret in (PATIENT_NAME, "Routingpatient", PATIENT_ID, "19500101"):
        assert secret not in text
    assert "SeriesDescription matches /(?i)fundus/" in text


def test_rules_cannot_read_patient_attributes():
    assert not any(k.startswith("Patient") for k in RULE_ATTRIBUTES)
    with pytest.raises(ConfigError, match="'PatientWeight' is not a numeric attribute rules may"):
        rules(rule(ranges={"PatientWeight": [0, 100]}))


# --- schema errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (rule(modalty=["OP"]), r"\('r'\): unknown key 'modalty' \(did you mean 'modality'\?\)"),
        ({"name": "r"}, r"\('r'\)\.models: every rule needs models"),
        (rule(models=[]), r"\('r'\)\.models: every rule needs models"),
        ({"models": ["m"]}, r"rules\[0\]\.name: every rule needs a non-empty name"),
        (rule(modality="OP,XC", photometric=[3]), r"\.photometric: expected a list of non-empty"),
        (rule(modality=[]), r"\.modality: an empty list matches nothing"),
        (rule(series_description="(unclosed"), r"\.series_description: '\(unclosed' is not a"),
        (
            rule(sop_class=["OphthalmicPhotography8bitImageStorage"]),
            r"did you mean 'OphthalmicPhotography8BitImageStorage'",
        ),
        (rule(image_type={"includes": ["X"]}), r"\.image_type: expected a mapping with include"),
        (rule(ranges={"SliceThickness": [5, 1]}), r"SliceThickness: min 5 is above max 1"),
        (rule(ranges={"SliceThickness": 3}), r"SliceThickness: expected \[min, max\]"),
        (rule(ranges={"SliceThickness": [None, None]}), r"expected \[min, max\]"),
        ("fundus", r"rules\[0\]: expected a mapping"),
    ],
)
def test_schema_errors_name_the_rule_the_key_and_the_fix(item, message):
    with pytest.raises(ConfigError, match=message):
        rules(item)


def test_rule_names_are_unique_and_a_file_needs_rules():
    with pytest.raises(ConfigError, match=r"rules\[1\]\.name: 'r' is used twice"):
        rules(rule(), rule())
    with pytest.raises(ConfigError, match="non-empty list of rules"):
        RoutingRules.parse({"rules": []}, "x.yaml")
    with pytest.raises(ConfigError, match="one key, 'rules'"):
        RoutingRules.parse([rule()], "x.yaml")


def test_models_must_be_known_when_known_models_are_given():
    assert rules(rule(models=["retina-vessels"]), known={"retina-vessels"})
    with pytest.raises(ConfigError, match=r"rule 'r': models: 'retina-vesels' is not a model"):
        rules(rule(models=["retina-vesels"]), known={"retina-vessels", "blood-cells"})


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such rules file"):
        RoutingRules.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid YAML"):
        RoutingRules.load(bad)


# --- vision dicom-node check-rules ---------------------------------------------------------


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    smear = dataset(VL_MICROSCOPIC, Modality="GM", PhotometricInterpretation="RGB")
    return {
        "fundus": write(fundus(), tmp_path / "fundus.dcm"),
        "smear": write(smear, tmp_path / "smear.dcm"),
        "ct": write(dataset(CT, Modality="CT"), tmp_path / "ct.dcm"),
    }


def test_check_rules_all_matched_exit_0(files, capsys):
    code = check_rules(["bundled", str(files["fundus"]), str(files["smear"])])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{files['fundus']}: rule 'fundus-photography' -> retina-vessels" in out
    assert f"{files['smear']}: rule 'blood-smear-microscopy' -> blood-cells" in out
    assert "  fundus-photography: matches\n    Modality 'OP' is one of ['OP']" in out
    # the smear's block says why the rules before the one it matched did not match
    smear_block = out.split(f"{files['smear']}:")[1]
    assert "fundus-photography: does not match" in smear_block
    assert "pcb-inspection" not in smear_block  # rules after the match are never tried
    assert PATIENT_NAME not in out and PATIENT_ID not in out


def test_check_rules_unmatched_exit_1(files, tmp_path, capsys):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    code = check_rules(["bundled", str(files["fundus"]), str(files["ct"]), str(junk)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{files['ct']}: no rule matched: the series would be set aside" in out
    assert "Modality 'CT' is not one of ['OP']" in out
    assert f"{junk}: cannot read as DICOM" in out


def test_check_rules_own_file_and_repository(files, tmp_path, capsys):
    own = tmp_path / "rules.yaml"
    own.write_text("rules:\n  - name: ct-thin\n    modality: [CT]\n    models: [lung]\n")
    assert check_rules([str(own), str(files["ct"])]) == 0
    assert f"{files['ct']}: rule 'ct-thin' -> lung" in capsys.readouterr().out
    code = check_rules(["--repository", str(ROOT / "models"), str(own), str(files["ct"])])
    assert code == 2
    assert "rule 'ct-thin': models: 'lung' is not a model" in capsys.readouterr().err
    assert check_rules(["--repository", str(ROOT / "models"), "bundled", str(files["ct"])]) == 1


def test_check_rules_bad_rules_file_exit_2(files, tmp_path, capsys):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: x\n    modality: [CT]\n    model: [lung]\n")
    assert check_rules([str(bad), str(files["ct"])]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'model' (did you mean 'models'?)" in err
    assert err.count("\n") == 1


def test_vision_dicom_node_command(files, capsys):
    assert vision_main(["dicom-node", "check-rules", "bundled", str(files["fundus"])]) == 0
    assert "retina-vessels" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        node_main(["no-such-subcommand"])
    assert info.value.code == 2
