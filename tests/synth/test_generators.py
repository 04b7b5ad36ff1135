"""Synthetic-data generators: exact labels, placement rules, provenance, split guard, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from vision.datasets.provenance import (
    Provenance,
    SyntheticDataError,
    assert_no_synthetic,
    is_synthetic,
    read_embedded,
    read_provenance,
    read_sidecar,
    sidecar_path,
    write_image,
)
from vision.paths import datasets_root
from vision.synth.copy_paste import (
    Instance,
    PasteConfig,
    box_foreground,
    from_mask,
    paste_instance,
    poisson_blend,
    tight_box,
)
from vision.synth.distribution import fit_class, instance_stats, load_fits, save_fits
from vision.synth.procedural import ProceduralConfig, add_defect, crack_mask, perlin_blob

DATA = datasets_root()
TILES = DATA / "magnetic-tile"
BCCD = DATA / "bccd" / "BCCD"
PCB = DATA / "deeppcb"


def _needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not path.is_dir(), reason=f"shared dataset not found at {path} (set VISION_DATASETS)"
    )


def _disk_instance(value: int = 220, radius: int = 9) -> Instance:
    size = 2 * radius + 9
    alpha = np.zeros((size, size), np.float32)
    cv2.circle(alpha, (size // 2, size // 2), radius, 1.0, cv2.FILLED)
    patch = np.full((size, size, 1), 100, np.uint8)
    patch[alpha > 0] = value
    return Instance("blob", patch, alpha, "src/a.png", 0, instance_stats(patch, alpha > 0))


def _fixed(blend: str = "alpha", **kw) -> PasteConfig:
    base = {"scale": (1.0, 1.0), "rotate": 0.0, "flip": False, "gain": (1.0, 1.0)}
    return PasteConfig(blend=blend, match_background=False, **{**base, **kw})


def test_alpha_paste_label_is_exactly_the_changed_pixels() -> None:
    image = np.full((80, 120, 1), 100, np.uint8)
    before = image.copy()
    placed = paste_instance(
        image, np.zeros((80, 120), bool), None, _disk_instance(), _fixed(), np.random.default_rng(0)
    )
    assert placed is not None
    changed = (image != before)[..., 0]
    assert np.array_equal(changed, placed.mask)
    assert placed.box == tight_box(changed)
    assert (image[placed.mask] == 220).all()


def test_box_cut_instance_keeps_its_annotated_box_size() -> None:
    """An instance cut from a loose annotated box (DeepPCB draws ~30 px around a few-pixel
    defect) is labelled with that box size (after scale and rotation) centred on the pasted
    pixels, so synthetic boxes follow the dataset's convention; the mask stays exact."""
    from vision.synth.copy_paste import annotated_box, from_box

    source = np.full((60, 60, 1), 255, np.uint8)
    source[27:33, 28:32] = 0  # a 4x6 defect inside a 30x30 annotation
    inst = from_box(source, (15, 15, 45, 45), "spur", "src/b.png", 0, "otsu")
    assert inst.box_size == (30.0, 30.0)
    image = np.full((200, 200, 1), 255, np.uint8)
    cfg = _fixed(binary=True, boxes=True)
    placed = paste_instance(
        image, np.zeros((200, 200), bool), None, inst, cfg, np.random.default_rng(0)
    )
    assert placed is not None
    x1, y1, x2, y2 = placed.box
    tx1, ty1, tx2, ty2 = tight_box(placed.mask)
    assert x1 <= tx1 and y1 <= ty1 and x2 >= tx2 and y2 >= ty2, "the box holds the pasted pixels"
    assert abs((x2 - x1) - 30) <= 1 and abs((y2 - y1) - 30) <= 1
    assert abs((x1 + x2) - (tx1 + tx2)) <= 1 and abs((y1 + y2) - (ty1 + ty2)) <= 1
    turned = annotated_box(placed.mask, (40.0, 10.0), {"scale": 0.5, "angle": 90.0})
    assert abs((turned[2] - turned[0]) - max(5, tx2 - tx1)) <= 1  # 40 x 0.5, turned: 5 wide
    assert turned[3] - turned[1] == 20
    edge = np.zeros((50, 50), bool)
    edge[0:4, 0:4] = True
    assert annotated_box(edge, (30.0, 30.0), {"scale": 1.0, "angle": 0.0}) == (0, 0, 17, 17)


@pytest.mark.parametrize("blend", ["alpha", "poisson"])
def test_jittered_paste_changes_only_its_footprint(blend: str) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(90, 110, (96, 128, 1), dtype=np.uint8)
    before = image.copy()
    cfg = PasteConfig(blend=blend, scale=(0.7, 1.5), match_background=False, guard=3)
    placed = paste_instance(image, np.zeros((96, 128), bool), None, _disk_instance(), cfg, rng)
    assert placed is not None
    changed = (image != before)[..., 0]
    near = cv2.dilate(placed.mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert not (changed & ~near).any(), "pixels changed outside the guard band"
    band = near & ~placed.mask
    assert image[placed.mask].mean() - image[band].mean() > 50, "label misaligned with content"
    assert placed.box == tight_box(placed.mask)


def test_no_overlap_inside_image_and_allowed_region() -> None:
    rng = np.random.default_rng(2)
    h, w = 120, 160
    image = np.full((h, w, 1), 100, np.uint8)
    occupied = np.zeros((h, w), bool)
    existing = (10, 10, 60, 50)
    occupied[existing[1] : existing[3], existing[0] : existing[2]] = True
    allowed = np.zeros((h, w), bool)
    allowed[5:115, 5:155] = True
    cfg = PasteConfig(blend="alpha", boxes=True, tries=200)
    placed = [
        paste_instance(image, occupied, allowed, _disk_instance(), cfg, rng) for _ in range(8)
    ]
    placed = [p for p in placed if p is not None]
    assert len(placed) >= 4
    boxes = [existing] + [p.box for p in placed]
    for p in placed:
        assert not (p.mask & ~allowed).any()
        assert p.mask.shape == (h, w)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            inter_w = min(a[2], b[2]) - max(a[0], b[0])
            inter_h = min(a[3], b[3]) - max(a[1], b[1])
            assert inter_w <= 0 or inter_h <= 0, f"boxes {a} and {b} overlap"


def test_binary_context_rule_keeps_the_source_surroundings() -> None:
    image = np.zeros((80, 160, 1), np.uint8)
    image[:, 80:] = 255  # right half white
    inst = _disk_instance(value=0)
    inst.patch[inst.alpha == 0] = 255  # the instance sat on white in its source
    cfg = _fixed(binary=True, min_context=0.9, tries=300)
    for seed in range(5):
        placed = paste_instance(
            image, np.zeros((80, 160), bool), None, inst, cfg, np.random.default_rng(seed)
        )
        assert placed is not None and placed.box[0] >= 80


def test_poisson_blend_reproduces_src_when_boundaries_agree() -> None:
    dst = np.full((40, 50, 3), 100, np.uint8)
    src = dst.copy()
    cv2.circle(src, (25, 20), 6, (220, 200, 180), cv2.FILLED)
    mask = np.zeros((40, 50), np.uint8)
    cv2.circle(mask, (25, 20), 10, 1, cv2.FILLED)
    out = poisson_blend(dst, src, mask.astype(bool))
    assert np.abs(out.astype(int) - src).max() <= 1
    shifted = poisson_blend(dst, (src.astype(int) + 30).clip(0, 255), mask.astype(bool))
    assert np.abs(shifted.astype(int) - src).max() <= 1  # Poisson keeps gradients, not levels


@pytest.mark.parametrize("kind", ["perlin", "crack"])
def test_procedural_mask_is_exact(kind: str) -> None:
    rng = np.random.default_rng(3)
    image = np.full((160, 200, 1), 128, np.uint8)
    before = image.copy()
    occupied = np.zeros((160, 200), bool)
    occupied[:40] = True  # an existing instance
    texture = ("tex.png", rng.integers(100, 140, (64, 64), dtype=np.uint8))
    cfg = ProceduralConfig(kind=kind, area=(300, 300), contrast=(-70, -70), opacity=(1, 1))
    placed = add_defect(image, occupied.copy(), None, "Crack", texture, cfg, rng)
    assert placed is not None
    changed = (image != before)[..., 0]
    assert not (changed & ~placed.mask).any()
    assert changed[placed.mask].mean() > 0.95
    assert not (placed.mask & occupied).any()
    assert placed.box == tight_box(placed.mask) and placed.params["kind"] == kind


def test_procedural_size_is_controllable() -> None:
    rng = np.random.default_rng(4)
    areas = [perlin_blob(400, 1.5, rng).sum() for _ in range(5)]
    assert all(200 < a <= 440 for a in areas), areas
    crack = crack_mask(100, 2, rng)
    assert 50 < crack.sum() < 600


def test_foreground_estimates_find_the_object() -> None:
    image = np.full((60, 80, 3), 230, np.uint8)
    truth = np.zeros((60, 80), np.uint8)
    cv2.circle(truth, (40, 30), 12, 1, cv2.FILLED)
    image[truth > 0] = (120, 60, 160)
    for method in ("otsu", "grabcut"):
        fg = box_foreground(image, (24, 14, 57, 47), method)
        iou = (fg & (truth > 0)).sum() / (fg | (truth > 0)).sum()
        assert iou > 0.85, (method, iou)
    mask = np.zeros((60, 80), bool)
    mask[5:10, 5:10] = mask[30:40, 50:70] = True
    assert [i.index for i in from_mask(image, mask, "c", "x.png")] == [0, 1]


def test_distribution_fit_samples_and_round_trips(tmp_path: Path) -> None:
    stats = [
        {"area": a, "aspect": 2.0, "contrast": -30.0, "cx": 0.2, "cy": 0.8} for a in (50, 80, 120)
    ]
    fit = fit_class("Crack", stats)
    draws = [fit.sample(np.random.default_rng(i)) for i in range(50)]
    assert 30 < np.median([d.area for d in draws]) < 150
    assert all(0 <= d.centre[0] <= 1 and 0 <= d.centre[1] <= 1 for d in draws)
    assert load_fits(save_fits(tmp_path / "fit.json", {"Crack": fit}))["Crack"] == fit


def _prov() -> Provenance:
    return Provenance(
        "copy-paste", {"scale": np.float32(1.5)}, [{"path": "a/b.jpg", "instance": 2}], 7
    )


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_provenance_round_trips_embedded_and_sidecar(tmp_path: Path, suffix: str) -> None:
    path = write_image(tmp_path / f"s{suffix}", np.zeros((8, 8, 1), np.uint8), _prov())
    expected = Provenance.from_json(_prov().to_json())
    for read in (read_embedded, read_sidecar, read_provenance):
        got = read(path)
        assert got is not None and got.sources == expected.sources and got.seed == 7
        assert got.params == {"scale": 1.5} and got.generator == "copy-paste"
    if suffix == ".png":
        assert "vision-synth-provenance" in Image.open(path).text
    sidecar_path(path).unlink()
    assert read_provenance(path) is not None and is_synthetic(path)


def test_split_guard_rejects_synthetic(tmp_path: Path) -> None:
    real = tmp_path / "real.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(real)
    synthetic = write_image(tmp_path / "fake.png", np.zeros((4, 4), np.uint8), _prov())
    assert not is_synthetic(real) and read_provenance(real) is None
    assert_no_synthetic([real], "test")
    with pytest.raises(SyntheticDataError, match="fake.png"):
        assert_no_synthetic([real, synthetic], "test")


@_needs(TILES)
@pytest.mark.parametrize("generator", ["copy-paste", "procedural"])
def test_cli_magnetic_tile_end_to_end(tmp_path: Path, generator: str) -> None:
    from vision.datasets.segmentation import load_tile, tile_index
    from vision.synth.cli import synth

    out = tmp_path / "out"
    argv = ["--dataset", "magnetic-tile", "--classes", "Fray,Crack", "--count", "3"]
    argv += ["--generator", generator, "--out", str(out), "--max-source-images", "30"]
    assert synth(argv) == 0
    index = tile_index(out)
    assert len(index) == 3 and set(index.values()) <= {"Fray", "Crack"}
    for sample in load_tile(out, sorted(index)):
        prov = read_provenance(Path(sample.path))
        assert prov is not None and prov.generator == generator
        boxes = [tuple(i["box"]) for i in prov.params["instances"]]
        assert tight_box(sample.mask > 0) == _union(boxes)
    assert_no_synthetic([])
    with pytest.raises(SyntheticDataError):
        assert_no_synthetic([out / rel for rel in index])
    summary = json.loads((out / "synth.json").read_text())
    assert summary["written"] == 3 and summary["images_per_second"] > 0
    assert (out / "contact_sheet.png").is_file() and "Crack" in load_fits(out / "fit.json")


def _union(boxes: list[tuple[int, ...]]) -> tuple[int, int, int, int]:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


@_needs(TILES)
def test_tile_pastes_stay_on_the_tile_and_off_each_other() -> None:
    from vision.synth.dataset import generate_one, load_sources, read_pixels, tile_region

    src = load_sources("magnetic-tile", TILES, ("Crack",), limit=20)
    for index in range(3):
        item = generate_one(src, "copy-paste", index, seed=5, per_image=3)
        assert item is not None
        again = generate_one(src, "copy-paste", index, seed=5, per_image=3)
        assert np.array_equal(item.image, again.image), "not reproducible from (seed, index)"
        bg = read_pixels(src.root / item.provenance.sources[0]["path"], 1)
        region = tile_region(bg)
        for k, p in enumerate(item.placed):
            assert not (p.mask & ~region).any() and p.box == tight_box(p.mask)
            assert all(not (p.mask & q.mask).any() for q in item.placed[k + 1 :])


@_needs(BCCD)
def test_cli_bccd_writes_voc_the_reader_loads(tmp_path: Path) -> None:
    from vision.datasets.detection import load_voc
    from vision.synth.cli import synth

    argv = [
        "--dataset",
        "bccd",
        "--classes",
        "WBC,Platelets",
        "--count",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert synth([*argv, "--max-source-images", "6", "--foreground", "otsu"]) == 0
    samples, classes = load_voc(tmp_path / "BCCD", "synth", ("RBC", "WBC", "Platelets"))
    assert len(samples) == 2 and all(is_synthetic(s.image) for s in samples)
    for s in samples:
        prov = read_provenance(s.image)
        pasted = {tuple(i["box"]) for i in prov.params["instances"]}
        edges = {(int(b[0]) - 1, int(b[1]) - 1, int(b[2]), int(b[3])) for b in s.boxes}
        assert pasted <= edges


@_needs(PCB)
def test_cli_deeppcb_writes_txt_the_reader_loads(tmp_path: Path) -> None:
    from vision.datasets.detection import load_deeppcb
    from vision.synth.cli import synth

    argv = ["--dataset", "deeppcb", "--classes", "short", "--count", "2", "--out", str(tmp_path)]
    assert synth([*argv, "--max-source-images", "20", "--per-image", "2"]) == 0
    samples, _ = load_deeppcb(tmp_path, "synth")
    assert len(samples) == 2
    for s in samples:
        prov = read_provenance(s.image)
        assert {tuple(i["box"]) for i in prov.params["instances"]} == {
            tuple(map(int, b)) for b in s.boxes
        }
        assert (s.labels == 1).all() and s.image.with_name(
            s.image.name.replace("_test", "_temp")
        ).is_file()
