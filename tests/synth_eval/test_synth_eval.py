"""Synthetic images in training: the mixing ratio, the evaluation-split guard, the DeepPCB
reduced view, and the paired experiment end to end (tiny budget; needs the shared datasets)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.datasets.mixing import (
    MixedBatchSampler,
    defect_positions,
    mixed_positions,
    per_batch,
)
from vision.datasets.provenance import Provenance, SyntheticDataError, write_image
from vision.paths import datasets_root, default_repository

TILES = datasets_root() / "magnetic-tile"


def _prov() -> Provenance:
    return Provenance("copy-paste", {"index": 0}, [{"path": "a.png", "instance": 0}], 0)


@pytest.mark.parametrize(("batch", "ratio", "k"), [(8, 0.25, 2), (8, 0.0, 0), (4, 0.1, 1)])
def test_mixed_positions_give_the_ratio_per_batch(batch: int, ratio: float, k: int) -> None:
    assert per_batch(batch, ratio) == k
    mask = mixed_positions(10 * batch, batch, ratio, seed=3)
    assert mask.reshape(10, batch).sum(1).tolist() == [k] * 10
    assert not np.array_equal(mask, mixed_positions(10 * batch, batch, ratio, seed=4)) or k == 0


def test_ratio_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        per_batch(8, 1.0)


def test_mixed_batch_sampler() -> None:
    sampler = MixedBatchSampler(n_real=30, n_synth=5, batch_size=8, ratio=0.25, batches=6, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6
    for b in batches:
        assert len(b) == 8 and sum(i >= 30 for i in b) == 2 and max(b) < 35
    real = [i for b in batches for i in b if i < 30]
    assert len(real) == 36 and set(real) == set(range(30))  # every real image in an epoch
    assert batches != list(sampler)  # a new order each epoch


def test_segmentation_crops_mix_synthetic_images_at_the_ratio() -> None:
    from vision.segment.model import get_recipe
    from vision.segment.train import CropDataset, Prepared

    recipe = get_recipe("tile-defects", batch_size=4, crop=0, labels=("background", "defect"))
    n_real, n_synth = 12, 3
    labels = np.zeros((n_real + n_synth, 8, 8), np.int64)
    labels[::2, 2:4, 2:4] = 1
    data = Prepared(
        np.zeros((n_real + n_synth, 1, 8, 8), np.float32),
        labels,
        np.ones_like(labels, bool),
        [str(i) for i in range(n_real + n_synth)],
    )
    ds = CropDataset(data, recipe, 40, epoch_seed=1, mix=(n_synth, 0.25))
    per = (np.asarray(ds.order) >= n_real).reshape(10, 4).sum(1)
    assert per.tolist() == [1] * 10
    unmixed = CropDataset(data, recipe, 40, epoch_seed=1, mix=(n_synth, 0.0))
    assert (np.asarray(unmixed.order) < n_real).all()


def test_defect_positions_replace_only_defect_images() -> None:
    has_defect = np.array([1, 0, 1, 0, 0, 0, 1, 1] + [0] * 7 + [1], bool)
    mask = defect_positions(has_defect, 8, 0.25, seed=0)
    assert not (mask & ~has_defect).any()  # never in place of a defect-free image
    assert mask.reshape(2, 8).sum(1).tolist() == [2, 1]  # the second batch has one defect image


def test_synthetic_replaces_defect_keeps_the_defect_free_share() -> None:
    from vision.segment.model import get_recipe
    from vision.segment.train import CropDataset, Prepared

    n_real, n_synth, length = 40, 5, 4000
    labels = np.zeros((n_real + n_synth, 8, 8), np.int64)
    labels[: n_real // 2, 2:4, 2:4] = 1  # half the real images show a defect
    labels[n_real:, 2:4, 2:4] = 1  # every synthetic one does
    data = Prepared(
        np.zeros((n_real + n_synth, 1, 8, 8), np.float32),
        labels,
        np.ones_like(labels, bool),
        [str(i) for i in range(n_real + n_synth)],
    )
    extra = {"free_per_epoch": 1.0}
    shares = {}
    for replaces in ("any", "defect"):
        recipe = get_recipe(
            "tile-defects",
            batch_size=8,
            crop=0,
            labels=("background", "defect"),
            extra={**extra, "synthetic_replaces": replaces},
        )
        order = np.asarray(CropDataset(data, recipe, length, 2, mix=(n_synth, 0.25)).order)
        free = ~labels[order].reshape(length, -1).any(1)
        shares[replaces] = (free.mean(), (order >= n_real).mean())
    assert abs(shares["any"][0] - 0.375) < 0.03 and abs(shares["any"][1] - 0.25) < 0.01
    assert abs(shares["defect"][0] - 0.5) < 0.03 and abs(shares["defect"][1] - 0.25) < 0.02


def _tile_tree(root: Path, synthetic: bool) -> list[str]:
    rels = []
    for i, cls in enumerate(("Fray", "Free")):
        folder = root / f"MT_{cls}" / "Imgs"
        folder.mkdir(parents=True)
        pixels = np.full((24, 24), 120, np.uint8)
        mask = np.zeros((24, 24), np.uint8)
        if synthetic and i == 0:
            write_image(folder / "s.jpg", pixels, _prov())
        else:
            Image.fromarray(pixels).save(folder / "s.jpg")
        Image.fromarray(mask).save(folder / "s.png")
        rels.append(f"MT_{cls}/Imgs/s.jpg")
    return rels


@pytest.mark.parametrize("synthetic", [False, True])
def test_segmentation_eval_refuses_a_synthetic_image(tmp_path: Path, synthetic: bool) -> None:
    from vision.segment.evaluate import load_samples
    from vision.segment.model import get_recipe

    rels = _tile_tree(tmp_path, synthetic)
    split_file = tmp_path / "splits.json"
    split_file.write_text(json.dumps({"splits": {"train": [], "val": [], "test": rels}}))
    recipe = get_recipe("tile-defects")
    if synthetic:
        with pytest.raises(SyntheticDataError, match="test split"):
            load_samples(recipe, tmp_path, "test", split_file)
    else:
        assert len(load_samples(recipe, tmp_path, "test", split_file)) == 2


def _voc(root: Path, names: list[str], split: str, synthetic: set[str] = frozenset()) -> None:
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n in names:
        pixels = np.full((48, 64, 3), 90, np.uint8)
        if n in synthetic:
            write_image(root / "JPEGImages" / f"{n}.png", pixels, _prov())
        else:
            Image.fromarray(pixels).save(root / "JPEGImages" / f"{n}.png")
        obj = "<object><name>WBC</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax>"
        obj += "<ymax>30</ymax></bndbox></object>"
        xml = f"<annotation><filename>{n}.png</filename>{obj}</annotation>"
        (root / "Annotations" / f"{n}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")


@pytest.mark.skipif(
    not (default_repository() / "blood-cells" / "config.yaml").is_file(),
    reason="models/blood-cells not in the repository",
)
def test_detection_eval_refuses_a_synthetic_image(tmp_path: Path) -> None:
    from vision.detect.evaluate import evaluate_detector

    _voc(tmp_path, ["real", "fake"], "test", synthetic={"fake"})
    with pytest.raises(SyntheticDataError, match="1 synthetic image"):
        evaluate_detector(
            "blood-cells",
            repo=default_repository(),
            split="test",
            data=tmp_path,
            fmt="voc",
            out=tmp_path / "out",
            update_card=False,
        )
    assert not (tmp_path / "out").exists()


def test_detection_trainer_mixes_and_guards(tmp_path: Path) -> None:
    from vision.detect.recipes import RECIPES
    from vision.detect.train import Trainer

    data, synth = tmp_path / "data", tmp_path / "synth"
    _voc(data, [f"r{i}" for i in range(8)], "train")
    _voc(data, ["v0"], "val")
    _voc(synth / "BCCD", ["s0", "s1"], "synth", synthetic={"s0", "s1"})
    recipe = dataclasses.replace(
        RECIPES["blood-cells"], data=str(data), batch=4, height=64, width=64, epochs=1, minutes=0
    )
    trainer = Trainer(recipe, tmp_path / "run", synthetic=synth, ratio=0.25)
    batches = list(trainer.loader().batch_sampler)
    assert len(batches) == 2 and all(sum(i >= 8 for i in b) == 1 for b in batches)
    _voc(data, ["v0"], "val", synthetic={"v0"})
    with pytest.raises(SyntheticDataError, match="val split"):
        Trainer(recipe, tmp_path / "run2")
    (data / "JPEGImages" / "v0.synth.json").unlink()
    _voc(data, ["v0"], "val")  # real again
    (synth / "BCCD" / "JPEGImages" / "s1.synth.json").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(synth / "BCCD" / "JPEGImages" / "s1.png")
    with pytest.raises(SyntheticDataError, match="no synthetic provenance"):
        Trainer(recipe, tmp_path / "run3", synthetic=synth, ratio=0.25)


def test_pcb_view_erases_dropped_boxes_with_the_template(tmp_path: Path) -> None:
    from vision.synth_eval.pcbview import kept_sources, pcb_view

    root = tmp_path / "pcb"
    lines = []
    for i in range(20):
        group = root / "PCBData" / "group1" / "1"
        (root / "PCBData" / "group1" / "1_not").mkdir(parents=True, exist_ok=True)
        group.mkdir(parents=True, exist_ok=True)
        template = np.zeros((64, 64), np.uint8)
        test = template.copy()
        test[10:20, 10:20] = 255  # a spur (type 4), then a short (type 2) far away
        Image.fromarray(test).save(group / f"{i}_test.jpg")
        Image.fromarray(template).save(group / f"{i}_temp.jpg")
        (group.parent / "1_not" / f"{i}.txt").write_text("10 10 20 20 4\n40 40 50 50 2\n")
        lines.append(f"group1/1/{i}.jpg group1/1_not/{i}.txt")
    (root / "PCBData" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (root / "PCBData" / "test.txt").write_text(lines[0] + "\n")
    notes = pcb_view(root, tmp_path / "view", "spur", keep=0.1)
    assert notes["boxes_kept"] == 2 and notes["images_erased"] == 18
    base = tmp_path / "view" / "PCBData"
    train = (base / "trainval.txt").read_text().split("\n")
    erased = [ln for ln in train if ln.startswith("masked/")]
    assert len(erased) == 18 and len(kept_sources(tmp_path / "view")) == 2
    image_rel, label_rel = erased[0].split()
    image = np.array(Image.open(base / image_rel.replace(".png", "_test.png")))
    assert image[8:22, 8:22].max() == 0  # the spur is gone (template pixels)
    assert (base / label_rel).read_text() == "40 40 50 50 2\n"
    assert (base / "test.txt").read_text().strip() == lines[0]


@pytest.mark.skipif(not TILES.is_dir(), reason=f"shared dataset not found at {TILES}")
def test_synth_eval_end_to_end_on_a_tiny_budget(tmp_path: Path) -> None:
    from vision.synth_eval.cli import synth_eval

    out = tmp_path / "report"
    argv = ["--experiment", "tile-fray-crack", "--seeds", "0,1", "--epochs", "1"]
    argv += ["--steps-per-epoch", "2", "--synth-count", "3"]
    assert synth_eval([*argv, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2 and report["seeds"] == [0, 1]
    for arm in ("baseline", "synthetic"):
        stats = report["arms"][arm]["rare mean"]
        assert len(stats["per_seed"]) == 2 and 0.0 <= stats["mean"] <= 1.0
    assert set(report["relative_gain"]) >= {"Fray", "Crack", "rare mean"}
    assert report["synthetic"]["written"] >= 1
    assert set(report["synthetic"]["per_seed"]) == {"0", "1"}, "one synthesis per training seed"
    for key in ("Crack precision", "Crack recall", "Crack area_ratio", "Fray precision"):
        assert len(report["arms"]["baseline"][key]["per_seed"]) == 2, key
    assert "free_fp_image_rate" in report["arms"]["synthetic"]
    for key in ("Crack @ val gate", "rare mean @ val gate", "free_fp_image_rate @ val gate"):
        assert len(report["arms"]["synthetic"][key]["per_seed"]) == 2, key
    assert "@ val gate" in report["goal"]["rule"] and report["goal_ungated"]["rule"]
    assert 0.0 <= report["arms"]["synthetic"]["image_auroc"]["mean"] <= 1.0
    assert (out / "gain.png").stat().st_size > 1000
    assert report["runs"]["baseline"][0]["val_curve"], "the baseline's val Dice per epoch"
    for arm in ("baseline", "synthetic"):  # gated on the image head fitted on the last weights
        assert report["runs"][arm][0]["image_score"] == "image head"
        assert 0.0 <= report["arms"][arm]["image head train AUROC"]["mean"] <= 1.0
    assert report["baseline_trained"]["trained"] is False, "one epoch cannot show a plateau"
    assert report["goal"]["met"] in (True, False) and "rare_gain" in report["goal"]
    again = tmp_path / "again"
    common = ["--work", str(tmp_path / "work"), "--out", str(again)]
    assert synth_eval([*argv, "--seeds", "0,1,5", *common, "--summarize-only"]) == 0
    summary = json.loads((again / "report.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["arms"] == report["arms"]


def test_operating_gate_keeps_masks_on_the_target_share_of_free_val_tiles() -> None:
    """`_gated_pairs` drops masks below the gate; `lowest_gate` over defect-free tiles (what
    `operating_gate` applies to val) leaves at most FREE_TARGET of them with a mask."""
    from vision.segment.gate_sweep import lowest_gate
    from vision.synth_eval.arms import (
        FREE_TARGET,
        _fired,
        _gated_pairs,
        _largest_defect_probability,
    )

    rng = np.random.default_rng(0)
    probs = []
    for peak in np.linspace(0.3, 0.95, 20):
        p1 = np.full((8, 8), 0.1)
        p1[2:4, 2:4] = peak
        probs.append(np.stack([1 - p1, p1]))
    scores = [_largest_defect_probability(p) for p in probs]
    fired = [_fired(p) for p in probs]
    gate = lowest_gate(scores, fired, [True] * 20, FREE_TARGET)
    kept = [f and s >= gate for f, s in zip(fired, scores, strict=True)]
    assert 0 < sum(kept) <= FREE_TARGET * 20 and sum(fired) > sum(kept)
    truth = [rng.random((8, 8)) > 2 for _ in probs]  # no defect anywhere
    served = [m for m, _ in _gated_pairs(probs, truth, scores, gate)]
    assert [bool(m.any()) for m in served] == kept


def test_an_arm_with_an_image_head_is_gated_on_the_head_not_the_largest_probability(
    tmp_path: Path,
) -> None:
    """`Scored.predict` returns the head's defect probability as the image score, and the
    largest defect probability only when the recipe has no head."""
    torch = pytest.importorskip("torch")
    from vision.segment.image_head import with_image_score
    from vision.segment.model import build_model, get_recipe
    from vision.synth_eval.arms import Scored, _largest_defect_probability

    rels = _tile_tree(tmp_path, synthetic=False)
    recipe = get_recipe("tile-defects", channels=(4, 8), strides=(2,), res_units=1)
    recipe = dataclasses.replace(recipe, height=32, width=32)
    torch.manual_seed(0)
    net = build_model(recipe).eval()
    plain = Scored(net, recipe, tmp_path)
    probs, truth, largest = plain.predict(rels, "test")
    assert largest == [_largest_defect_probability(p) for p in probs] and len(truth) == 2
    head = {"layers": ["model.1.submodule"], "weight": np.zeros(16), "bias": 2.0}
    headed = Scored(net, recipe, tmp_path, with_image_score(net, head))
    same_probs, _, scores = headed.predict(rels, "test")
    np.testing.assert_allclose(same_probs, probs)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-2.0))] * 2, rtol=1e-6)
