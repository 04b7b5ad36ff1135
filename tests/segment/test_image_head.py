"""The image-level defect head: fitted on pooled encoder features, folded into one linear layer,
exported beside the logits, and its score served and scored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("sklearn")

from vision.paths import datasets_root  # noqa: E402
from vision.segment.image_head import (  # noqa: E402
    SCORE_OUTPUT,
    fit_head,
    pooled_features,
    with_image_score,
)
from vision.segment.model import build_model, get_recipe  # noqa: E402

TILES = datasets_root() / "magnetic-tile"
BOTTOM = "model.1.submodule"  # the bottom block of a one-level UNet


def _tiny_unet():
    recipe = get_recipe("tile-defects", channels=(4, 8), strides=(2,), res_units=1)
    torch.manual_seed(0)
    return build_model(recipe).eval()


def test_fit_head_folds_the_scaler_into_the_linear_layer() -> None:
    """The folded weight and bias give the same ranking as scikit-learn's standardised model,
    and the wrapped network returns sigmoid(weight . pooled + bias) as its second output."""
    rng = np.random.default_rng(0)
    features = rng.normal(5.0, 3.0, (60, 4))
    has_defect = features[:, 0] + 0.3 * rng.normal(size=60) > 5.0
    head = fit_head(features, has_defect, c=1.0)
    assert head["train_auroc"] > 0.9 and head["train_images"] == 60
    net = _tiny_unet()
    inputs = rng.normal(size=(3, 1, 32, 32)).astype(np.float32)
    pooled = pooled_features(net, [BOTTOM], inputs)
    assert pooled.shape == (3, 16)  # 8 channels, max and mean
    weight = rng.normal(size=16)
    wrapped = with_image_score(net, {"layers": [BOTTOM], "weight": weight, "bias": -0.5})
    logits, score = wrapped(torch.from_numpy(inputs))
    assert logits.shape == (3, 2, 32, 32) and score.shape == (3,)
    expected = 1 / (1 + np.exp(-(pooled @ weight - 0.5)))
    np.testing.assert_allclose(score.detach().numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(logits.detach().numpy(), net(torch.from_numpy(inputs)).detach())
    assert len(pooled_features(net, [BOTTOM], inputs)) == 3, "hooks are removed after use"


@pytest.mark.skipif(not TILES.is_dir(), reason=f"shared magnetic-tile dataset not at {TILES}")
def test_tile_head_trains_exports_and_serves_its_score(tmp_path: Path) -> None:
    """A tiny tile recipe with an image head: training records the head, export writes both
    outputs and the config's image_score_output, evaluation scores AUROC from it, and the
    serving pipeline returns the same score as the torch model."""
    from vision.config import load_config
    from vision.pipeline import Pipeline
    from vision.runtime import OnnxModel
    from vision.segment.evaluate import evaluate_model, load_samples, model_inputs
    from vision.segment.export import _load_checkpoint, export_recipe
    from vision.segment.train import train
    from vision.weights import load_bundled

    base = get_recipe("tile-defects")
    extra = {k: v for k, v in base.extra.items() if k not in ("online_synth", "phases")}
    recipe = dataclasses.replace(
        base,
        height=64,
        width=64,
        crop=32,
        channels=(4, 8),
        strides=(2,),
        res_units=1,
        batch_size=2,
        steps_per_epoch=2,
        epochs=1,
        minutes=1.0,
        extra={**extra, "image_head": {"layers": [BOTTOM], "C": 1.0}},
    )
    run = tmp_path / "run"
    summary = train(recipe, TILES, run)
    assert 0.0 <= summary["image_head_train_auroc"] <= 1.0
    model, _, state = _load_checkpoint(run / "best.pt")
    assert state["image_head"]["layers"] == [BOTTOM] and len(state["image_head"]["weight"]) == 16
    assert export_recipe(recipe, run / "best.pt", tmp_path / "repo", TILES, limit=6) == 0
    config = load_config(tmp_path / "repo" / recipe.name)
    assert config.postprocess.image_score_output == SCORE_OUTPUT
    onnx_model = OnnxModel(tmp_path / "repo" / recipe.name / "1" / "model.onnx")
    assert onnx_model.output_names == ["logits", SCORE_OUTPUT]
    sample = load_samples(recipe, TILES, "val", run / "splits.json", limit=1)[0]
    pipeline = Pipeline(config)
    (tensor,), (meta,) = model_inputs(pipeline, [sample])
    outputs = onnx_model.run({"images": tensor[None]})
    served = pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
    with torch.no_grad():
        _, eager = model(torch.from_numpy(tensor[None]))
    assert served.image_score == pytest.approx(float(eager[0]), abs=1e-5)
    shipped = load_bundled(recipe.name, tmp_path / "repo")  # what `vision train --init` reads
    with torch.no_grad():
        _, reloaded = shipped(torch.from_numpy(tensor[None]))
    assert float(reloaded[0]) == pytest.approx(float(eager[0]), abs=1e-6)
    report = evaluate_model(recipe, tmp_path / "repo", TILES, "val", tmp_path / "eval", limit=6)
    assert 0.0 <= report["metrics"]["auroc"] <= 1.0
    assert (tmp_path / "eval" / "roc.png").is_file()
