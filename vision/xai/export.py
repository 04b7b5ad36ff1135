"""Add a Grad-CAM explain graph (`model.explain.onnx`) to a model already in the repository.

`add_explain_graph` loads the training checkpoint (detector or segmenter, by the config's task),
preprocesses one real validation image exactly as the server does (`vision.pipeline.Pipeline`),
exports the explain graph with the parity gate on, then records it in `config.yaml`
(`explain:`) and in the model card (`card.json` / `MODEL_CARD.md`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vision.config import ModelConfig, load_config, write_config
from vision.export import read_card, sha256, write_card
from vision.io import decode_image
from vision.loader import load_model
from vision.pipeline import Pipeline
from vision.types import Image
from vision.xai.split_graph import part_paths, write_split

log = logging.getLogger(__name__)

EXPLAIN_FILE = "model.explain.onnx"
# backbone.stages.0 (stride 8) feeds every detection level; smooth.0 feeds only the stride-8
# head, so boxes from the stride-16/32 heads would get all-zero maps there.
DETECTOR_LAYER = "backbone.stages.0"
DETECTOR_FALLBACK_LAYER = "smooth.0"
TARGET_INPUT = {"detection": "target_anchor", "segmentation": "target_mask"}


def _detector_example(checkpoint: Path) -> tuple[Any, Image, str]:
    """Detector (eval mode), its first validation image decoded, the target kind."""
    from vision.detect.exporting import load_checkpoint
    from vision.detect.train import splits

    model, recipe, _, _ = load_checkpoint(checkpoint)
    _, val, _ = splits(recipe)
    return model, decode_image(Path(val[0].image).read_bytes()), "detection"


def _segmenter_example(checkpoint: Path) -> tuple[Any, Image, str]:
    """Segmenter (eval mode), its first validation image decoded, the target kind."""
    from vision.datasets.locations import dataset_dir
    from vision.segment.evaluate import load_samples
    from vision.segment.export import _load_checkpoint

    model, recipe, _ = _load_checkpoint(checkpoint)
    root = Path(".") if recipe.dataset == "folder" else dataset_dir(recipe.dataset)
    sample = load_samples(recipe, root, "val", checkpoint.parent / "splits.json", limit=1)[0]
    if sample.path:
        return model, decode_image(Path(sample.path).read_bytes()), "segmentation"
    return model, Image(pixels=sample.image), "segmentation"


def _bundled_example(model_dir: Path, image: Path | None) -> tuple[Any, Image, str]:
    """The shipped weights (`vision.weights.load_bundled`), `image` decoded, the target kind."""
    from vision.weights import load_bundled

    if image is None:
        raise ValueError("without a checkpoint, give the example image (a validation image)")
    model = load_bundled(model_dir.name, model_dir.parent)
    kind = "detection" if hasattr(model, "heads") else "segmentation"
    return model, decode_image(Path(image).read_bytes()), kind


def load_for_explain(config: ModelConfig, checkpoint: Path) -> tuple[Any, Image, str]:
    """The eager torch model of `checkpoint`, one real validation image and the target kind."""
    if config.task == "detection":
        return _detector_example(checkpoint)
    return _segmenter_example(checkpoint)


def example_tensor(config: ModelConfig, image: Image) -> Any:
    """The image as the server feeds it: Pipeline.preprocess, batch of one, torch float32."""
    import torch

    tensor, _ = Pipeline(config).preprocess(image)
    return torch.from_numpy(np.ascontiguousarray(tensor[np.newaxis], dtype=np.float32))


def _plain(value: Any) -> Any:
    """JSON-friendly copy of a parity report (numpy scalars become Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _export(
    model: Any,
    layers: list[str],
    kind: str,
    example: Any,
    path: Path,
    method: str,
    outputs: tuple[str, ...],
) -> tuple[str, dict]:
    """Export with the first layer that passes the parity gate; (layer, parity). `outputs`: the
    served graph's output names, which the explain graph repeats before `cam`."""
    from vision.xai.explain_graph import ExplainParityError, export_explain_graph

    failures = []
    for layer in layers:
        try:
            result = export_explain_graph(
                model, layer, kind, example, path, method=method, output_names=outputs
            )
        except ExplainParityError as exc:
            log.warning("explain graph with layer %s failed parity: %s", layer, exc)
            failures.append(f"{layer}: {exc}")
            continue
        return layer, _plain(result.parity)
    path.unlink(missing_ok=True)
    raise RuntimeError("no target layer passed the explain parity gate:\n" + "\n".join(failures))


def add_explain_graph(
    repo: Path,
    name: str,
    checkpoint: Path | None,
    version: int | None = None,
    method: str = "gradcam",
    target_layer: str | None = None,
    image: Path | None = None,
) -> dict:
    """Export `<repo>/<name>/<version>/model.explain.onnx`; update config.yaml and the card.

    `checkpoint` None: the shipped weights (`weights.safetensors`) and `image` as the example.
    `version`: default the latest. `target_layer`: default the architecture's (detector:
    `backbone.stages.0`, falling back to `smooth.0` if that fails parity). Returns the card's
    new `explain` entry. Raises RuntimeError (nothing recorded) when parity fails.
    """
    from vision.xai.explain_graph import default_target_layer

    model_dir = Path(repo) / name
    config = load_config(model_dir)
    served_model = load_model(model_dir, version, providers=("cpu",), explain=False, config=config)
    version = int(served_model.version)
    if checkpoint is None:
        model, image, kind = _bundled_example(model_dir, image)
    else:
        model, image, kind = load_for_explain(config, Path(checkpoint))
    if target_layer:
        layers = [target_layer]
    elif kind == "detection":
        layers = [DETECTOR_LAYER, DETECTOR_FALLBACK_LAYER]
    else:
        layers = [default_target_layer(model)]
    path = model_dir / str(version) / EXPLAIN_FILE
    example = example_tensor(config, image)
    served = served_model.session.output_names
    layer, parity = _export(model, layers, kind, example, path, method, tuple(served))
    for stale in part_paths(path):
        stale.unlink(missing_ok=True)
    if kind == "detection":
        write_split(path)  # forward once at serving, without the onnx package there
    spec = dataclasses.replace(config.explain, file=EXPLAIN_FILE, method=method, target_layer=layer)
    write_config(dataclasses.replace(config, explain=spec), model_dir)
    shared = kind == "detection"
    entry = {
        "file": f"{version}/{EXPLAIN_FILE}",
        "layout": "shared forward: images [1], K targets, cam [K, h, w]"
        if shared
        else "one image per target: images [N], N targets, cam [N, h, w]",
        "method": method,
        "target_layer": layer,
        "target_kind": kind,
        "inputs": ["images", "target_class", TARGET_INPUT[kind]],
        "outputs": "the model's outputs, then cam [N, h, w] (raw, before ReLU / min-max)",
        "example": f"one validation image, {config.input.height}x{config.input.width} after "
        "vision.pipeline preprocessing; target: the model's own top prediction"
        + (" (shared: its strongest anchors)" if shared else ""),
        "weights": str(checkpoint) if checkpoint else "shipped weights.safetensors",
        "parity": parity,
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "exported_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_card(model_dir, {**read_card(model_dir), "explain": entry})
    log.info("wrote %s (%d bytes, layer %s): %s", path, entry["bytes"], layer, parity)
    return entry


__all__ = ["EXPLAIN_FILE", "add_explain_graph"]
