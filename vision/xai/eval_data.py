"""What `vision xai-eval` explains and scores: test images, targets, truth regions, scores.

Torch-free: images come from the reference datasets' test splits, heat maps from the model's
explain graph (`Explainer`), target scores from the plain ONNX model through the server's
`Pipeline`. A target is one explained finding: a class over the image (segmentation) or one
detection (detection).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision.config import ModelConfig
from vision.io import decode_image
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.types import Detection, DetectionResult, Image, PreprocessMeta
from vision.xai.explainer import Explainer

SCORE_THRESHOLD = 0.001  # detections kept while scoring perturbed images
MATCH_IOU = 0.5  # a perturbed image's detection (or a truth box) matches the explained box


@dataclass
class Item:
    """One test image with its truth: a class-id map (segmentation) or boxes and labels."""

    name: str
    image: Image
    mask: np.ndarray | None = None
    boxes: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass
class Target:
    """One explained finding of one image: its map, and what scores and checks it."""

    item: Item
    class_id: int
    heat: np.ndarray  # [H, W] in [0, 1], original image size
    tensor: np.ndarray  # the preprocessed input (no batch dimension)
    meta: PreprocessMeta
    region: np.ndarray | None = None  # segmentation: the predicted class region (scoring)
    detection: Detection | None = None
    truth: np.ndarray | None = None  # [H, W] bool truth region for pointing / IoU, if any


def _spread(samples: list, limit: int) -> list:
    if not limit or limit >= len(samples):
        return samples
    idx = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in sorted(set(idx))]


SPLITS = ("val", "test")  # choose layers, thresholds, ... on val; test is the final report


def _segmentation_items(name: str, model_dir: Path, limit: int, split: str) -> list[Item]:
    from vision.datasets.locations import dataset_dir
    from vision.segment.evaluate import load_samples
    from vision.segment.model import get_recipe

    recipe = get_recipe(name)
    root = dataset_dir(recipe.dataset)
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset not found")
    samples = load_samples(recipe, root, split, model_dir / "splits.json", limit)
    items = []
    for s in samples:
        image = decode_image(Path(s.path).read_bytes()) if s.path else Image(pixels=s.image)
        items.append(Item(s.name, image, mask=s.mask))
    return items


def _detection_samples(recipe: Any, split: str) -> list:
    """The recipe's test split, or its validation split exactly as training made it
    (`vision.detect.train.splits`: the val list, else the held-out part of train)."""
    from vision.datasets.detection import load_dataset, split_holdout

    root = recipe.data_path()
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset not found")
    if split == "test":
        return load_dataset(recipe.format, root, recipe.test_split)[0]
    train, labels = load_dataset(recipe.format, root, recipe.train_split)
    if recipe.val_split:
        return load_dataset(recipe.format, root, recipe.val_split, labels)[0]
    return split_holdout(train, recipe.holdout or max(1, len(train) // 10))[1]


def _detection_items(name: str, limit: int, split: str) -> list[Item]:
    from vision.detect.recipes import RECIPES

    samples = _detection_samples(RECIPES[name], split)
    return [
        Item(s.image.stem, decode_image(s.image.read_bytes()), boxes=s.boxes, labels=s.labels)
        for s in _spread(samples, limit)
    ]


def load_items(config: ModelConfig, model_dir: Path, limit: int, split: str = "test") -> list[Item]:
    """`limit` images (spread over the split) of a reference model's `split` (val or test)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {list(SPLITS)} (--split)")
    if config.task == "segmentation":
        return _segmentation_items(config.name, model_dir, limit, split)
    return _detection_items(config.name, limit, split)


def box_iou(a: tuple[float, ...], b: np.ndarray) -> np.ndarray:
    """IoU of one box (x1, y1, x2, y2) with boxes [N, 4]."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


def _coords(d: Detection) -> tuple[float, float, float, float]:
    return (d.x1, d.y1, d.x2, d.y2)


def truth_box_mask(item: Item, d: Detection, shape: tuple[int, int]) -> np.ndarray | None:
    """The region of the same-class truth box best matching `d` (IoU > MATCH_IOU), or None."""
    if item.boxes is None or item.labels is None:
        return None
    same = item.labels == d.class_id
    if not same.any():
        return None
    ious = box_iou(_coords(d), item.boxes[same])
    if ious.max() <= MATCH_IOU:
        return None
    x1, y1, x2, y2 = np.round(item.boxes[same][int(ious.argmax())]).astype(int)
    mask = np.zeros(shape, dtype=bool)
    mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    return mask


class Scorer:
    """Target scores of (perturbed) images through the plain model and the server's pipeline."""

    def __init__(self, config: ModelConfig, plain: OnnxModel, batch: int = 8) -> None:
        post = dataclasses.replace(config.postprocess, score_threshold=SCORE_THRESHOLD)
        self.pipeline = Pipeline(dataclasses.replace(config, postprocess=post))
        self.plain, self.batch = plain, max(1, batch)
        self.input = config.input.name

    def outputs(self, images: list[np.ndarray]) -> list[tuple[dict, PreprocessMeta]]:
        """Per image: the model's outputs (one item) and the preprocessing meta."""
        found = []
        for i in range(0, len(images), self.batch):
            pairs = [self.pipeline.preprocess(Image(pixels=p)) for p in images[i : i + self.batch]]
            out = self.plain.run({self.input: np.stack([t for t, _ in pairs])})
            found += [({k: v[j] for k, v in out.items()}, m) for j, (_, m) in enumerate(pairs)]
        return found

    def score(self, images: list[np.ndarray], target: Target) -> np.ndarray:
        """Segmentation: mean class probability inside the target region. Detection: the best
        score of a same-class detection with IoU > MATCH_IOU to the explained box, else 0."""
        scores = []
        for outputs, meta in self.outputs(images):
            if target.detection is None:
                probs = self.pipeline.segmentation_probabilities(outputs, meta)[target.class_id]
                region = target.region
                inside = probs[region] if region is not None and region.any() else probs
                scores.append(float(inside.mean()))
                continue
            result = self.pipeline.postprocess(outputs, meta)
            assert isinstance(result, DetectionResult)
            same = [d for d in result.detections if d.class_id == target.class_id]
            boxes = np.array([_coords(d) for d in same]).reshape(-1, 4)
            ious = box_iou(_coords(target.detection), boxes)
            matched = [d.score for d, v in zip(same, ious, strict=True) if v > MATCH_IOU]
            scores.append(max(matched, default=0.0))
        return np.asarray(scores, dtype=np.float64)


def explain_item(item: Item, explainer: Explainer, plain: OnnxModel, count: int) -> list[Target]:
    """Up to `count` targets of one image: the top detections, or the classes it segments."""
    config = explainer.config
    tensor, meta = explainer.pipeline.preprocess(item.image)
    shape = (item.image.height, item.image.width)
    if config.task == "segmentation":
        result, found = explainer.explain_segmentation(tensor, meta, [])
        regions = {m.class_id: m.mask for m in result.masks}
        return [
            Target(
                item,
                f.class_id,
                f.heat,
                tensor,
                meta,
                region=regions.get(f.class_id),
                truth=None if item.mask is None else item.mask == f.class_id,
            )
            for f in found[:count]
        ]
    outputs = plain.run({config.input.name: tensor[np.newaxis]})
    result = explainer.pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
    assert isinstance(result, DetectionResult)
    top = sorted(result.detections, key=lambda d: -d.score)[:count]
    found = explainer.explain_detections(tensor, meta, DetectionResult(top))
    return [
        Target(
            item,
            f.class_id,
            f.heat,
            tensor,
            meta,
            detection=f.detection,
            truth=truth_box_mask(item, f.detection, shape),
        )
        for f in found
        if f.detection is not None
    ]
