"""Online synthesis: class-balanced draws, exact labels, fresh images in training batches."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from vision.paths import datasets_root
from vision.synth.online import OnlineSynthesis, balanced_weights, tile_labels

TILES = datasets_root() / "magnetic-tile"
needs_tiles = pytest.mark.skipif(
    not TILES.is_dir(), reason=f"shared dataset not found at {TILES} (set VISION_DATASETS)"
)


def test_balanced_weights_favour_the_rarer_class() -> None:
    weights = balanced_weights({"Fray": 10, "Crack": 30})
    assert weights == pytest.approx({"Fray": 0.75, "Crack": 0.25})


@pytest.fixture(scope="module")
def online() -> OnlineSynthesis:
    from vision.synth.dataset import load_sources

    sources = load_sources("magnetic-tile", TILES, ("Fray", "Crack"), limit=12, seed=0)
    return OnlineSynthesis(sources, "copy-paste", seed=3)


@needs_tiles
def test_draws_follow_the_weights_and_repeat_per_index(online: OnlineSynthesis) -> None:
    draws = Counter(online.draw_class(i) for i in range(400))
    for cls, weight in online.weights.items():
        assert draws[cls] / 400 == pytest.approx(weight, abs=0.08)
    first, again = online.make(5), online.make(5)
    assert first is not None and again is not None
    assert np.array_equal(first.image, again.image)


@needs_tiles
def test_labels_are_the_pasted_masks(online: OnlineSynthesis) -> None:
    item = next(x for x in (online.make(i) for i in range(10)) if x is not None)
    union = np.any([p.mask for p in item.placed], axis=0)
    assert np.array_equal(tile_labels(item, binary=True) > 0, union)
    classes = tile_labels(item, binary=False)
    assert set(np.unique(classes[union])) <= {3, 4}  # Crack = 3, Fray = 4 in TILE_CLASSES order


@needs_tiles
def test_training_batches_carry_fresh_synthetic_items(online: OnlineSynthesis, tmp_path) -> None:
    from vision.segment.model import get_recipe
    from vision.segment.train import CropDataset, Prepared, load_splits

    recipe = dataclasses.replace(get_recipe("tile-defects"), batch_size=4, steps_per_epoch=2)
    splits = load_splits(recipe, TILES, tmp_path)
    data = Prepared.of(splits["train"][:6], recipe)
    dataset = CropDataset(data, recipe, 8, epoch_seed=1, mix=(0, 0.5), online=online)
    assert dataset.made is not None and dataset.made.reshape(2, 4).sum(1).tolist() == [2, 2]
    made = int(np.flatnonzero(dataset.made)[0])
    x_made, y_made, _ = dataset._source(made)
    assert x_made.shape == data.inputs[0].shape and y_made.shape == data.labels[0].shape
    assert y_made.any()
    first, second = (dataset.numbers[int(i)] for i in np.flatnonzero(dataset.made[:4]))
    assert first != second  # distinct images within a batch
    later = dataset.numbers[int(np.flatnonzero(dataset.made[4:])[0]) + 4]
    assert later in (first, second)  # served again by the next batch (reuse=4)
    x, y = dataset[made]
    assert tuple(x.shape) == (1, recipe.crop, recipe.crop) and tuple(y.shape) == x.shape[1:]


@needs_tiles
def test_the_tile_recipe_synthesises_from_its_training_split_only(tmp_path) -> None:
    from vision.segment.model import get_recipe
    from vision.segment.train import load_splits, recipe_online
    from vision.synth.online import from_spec

    recipe = get_recipe("tile-defects")
    splits = load_splits(recipe, TILES, tmp_path)
    online, ratio = recipe_online(recipe, TILES, splits, from_spec)
    assert ratio == recipe.extra["online_synth"]["ratio"]
    assert set(online.weights) == set(recipe.extra["online_synth"]["classes"])
    train = {s.name for s in splits["train"]}
    held_out = {s.name for s in splits["val"]}
    used = {i.source for v in online.sources.instances.values() for i in v}
    used |= {b.rel for b in online.sources.backgrounds}
    assert used <= train and not used & held_out
    assert online.source_images() == used


def test_a_recipe_that_synthesises_online_needs_a_factory(tmp_path) -> None:
    """Segmentation training never imports synthesis: without an injected factory, a recipe
    with `extra["online_synth"]` is refused (ConfigError), not silently trained without it."""
    from vision.errors import ConfigError
    from vision.segment.model import get_recipe
    from vision.segment.train import recipe_online

    recipe = get_recipe("tile-defects")
    with pytest.raises(ConfigError, match="make_online"):
        recipe_online(recipe, TILES, {"train": []}, None)
