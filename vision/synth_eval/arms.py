"""One arm of the paired experiment: train for a fixed step budget, score on real images."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from vision.datasets.provenance import assert_no_synthetic
from vision.synth_eval.experiment import Experiment


@dataclasses.dataclass(frozen=True)
class Budget:
    """What both arms share: seed, steps (epochs x steps per epoch), threads, data limits."""

    seed: int
    epochs: int = 0  # 0: the experiment's
    steps_per_epoch: int = 0  # segmentation only; 0: the experiment's
    threads: int = 1
    train_limit: int = 0  # detection: at most this many training images (tests)
    test_limit: int = 0  # 0: the experiment's


def _pooled_dice(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    from vision.segment.metrics import dice_iou

    pred = np.concatenate([p.ravel() for p, _ in pairs])
    truth = np.concatenate([t.ravel() for _, t in pairs])
    return dice_iou(pred, truth)[0]


def segmentation_recipe(exp: Experiment, budget: Budget):
    """The experiment's small segmentation recipe for one seed (steps fixed, time unbounded)."""
    from vision.segment.model import get_recipe

    overrides = dict(exp.overrides)
    if budget.epochs:
        overrides["epochs"] = budget.epochs
    if budget.steps_per_epoch:
        overrides["steps_per_epoch"] = budget.steps_per_epoch
    return get_recipe(exp.recipe, seed=budget.seed, minutes=1e9, **overrides)


def _pixel_scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Pooled Dice, precision, recall and predicted-to-true area ratio of boolean pairs."""
    pred = np.concatenate([p.ravel() for p, _ in pairs])
    truth = np.concatenate([t.ravel() for _, t in pairs])
    hits = float(np.logical_and(pred, truth).sum())
    return {
        "dice": _pooled_dice(pairs),
        "precision": hits / max(float(pred.sum()), 1.0),
        "recall": hits / max(float(truth.sum()), 1.0),
        "area_ratio": float(pred.sum()) / max(float(truth.sum()), 1.0),
    }


@dataclasses.dataclass
class Scored:
    """An arm's network on real images: probability maps, true masks and image scores."""

    model: object
    recipe: object
    root: Path
    head: object = None  # a `WithImageScore` when the recipe has an image head

    def predict(self, rels: list[str], name: str) -> tuple[list, list, list[float]]:
        """(defect probability maps, true masks, image scores) of the real images `rels`."""
        from vision.datasets.segmentation import load_tile
        from vision.segment.train import Prepared, predict

        samples = load_tile(self.root, rels, True)
        assert_no_synthetic([s.path for s in samples], name)
        data = Prepared.of(samples, self.recipe)
        if self.head is None:
            probs = predict(self.model, data.inputs)
            return probs, list(data.labels), [_largest_defect_probability(p) for p in probs]
        probs, scores = probabilities_and_scores(self.head, data.inputs)
        return probs, list(data.labels), scores


def probabilities_and_scores(
    head, inputs: np.ndarray, batch: int = 4
) -> tuple[list[np.ndarray], list[float]]:
    """Softmax probabilities (C,H,W) and the image head's defect probability of each input
    (N,C,H,W), from one forward pass of `head` (a `WithImageScore`) per batch."""
    import torch

    head.eval()
    probs: list[np.ndarray] = []
    scores: list[float] = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            logits, score = head(torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch])))
            probs += list(torch.softmax(logits, 1).numpy())
            scores += [float(x) for x in score]
    return probs, scores


# The operating point: the arm's own gate on its image score (the image head's defect
# probability where the recipe has one, as the bundled tile-defects model serves; else the
# largest defect probability), chosen on its defect-free *val* tiles so that masks stay on at
# most this share of them; test is then scored with masks served only at or above it, so both
# arms are compared at about the same defect-free false-positive rate.
FREE_TARGET = 0.10
AT_GATE = "@ val gate"


def _largest_defect_probability(probs: np.ndarray) -> float:
    return float(probs[1:].max())


def _fired(probs: np.ndarray) -> bool:
    return bool((probs.argmax(0) > 0).any())


def _free_tiles(splits: dict, split: str) -> list[str]:
    from vision.datasets.segmentation import TILE_FREE

    return [r for r in splits.get(split, []) if r.startswith(f"MT_{TILE_FREE}/")]


def operating_gate(arm: Scored, splits: dict) -> tuple[float, int]:
    """(The lowest image-score gate at which masks stay on at most `FREE_TARGET` of the
    defect-free val tiles, how many there were); (0, 0) without any."""
    from vision.segment.gate_sweep import lowest_gate

    rels = _free_tiles(splits, "val")
    if not rels:
        return 0.0, 0
    probs, _, scores = arm.predict(rels, "val")
    fired = [_fired(p) for p in probs]
    return lowest_gate(scores, fired, [True] * len(rels), FREE_TARGET), len(rels)


def _free_scores(arm: Scored, splits: dict, gate: float) -> tuple[dict[str, float], list[float]]:
    """Share of defect-free test tiles with a predicted defect (ungated and at `gate`), and
    their image scores."""
    rels = _free_tiles(splits, "test")
    if not rels:
        return {}, []
    probs, _, scores = arm.predict(rels, "test")
    flags = [_fired(p) for p in probs]
    gated = [f and s >= gate for f, s in zip(flags, scores, strict=True)]
    return {
        "free_fp_image_rate": float(np.mean(flags)),
        f"free_fp_image_rate {AT_GATE}": float(np.mean(gated)),
        "free images": len(rels),
    }, scores


def _gated_pairs(probs: list, labels: list, scores: list[float], gate: float) -> list[tuple]:
    """(served mask, truth) pairs with no mask where the image score is below `gate`."""
    return [
        ((p.argmax(0) > 0) & (s >= gate), t > 0)
        for p, t, s in zip(probs, labels, scores, strict=True)
    ]


def score_segmentation(arm: Scored, splits: dict, exp: Experiment) -> dict:
    """Per rare class on its real test (and val + test) images: pooled Dice (the class key),
    precision, recall and predicted-to-true area ratio; on the defect-free test tiles the share
    with a predicted defect; image-level AUROC of the image score (`Scored.predict`'s), rare-class
    test tiles against defect-free ones. The test figures also at the arm's operating point
    (`operating_gate`, chosen on val; keys ending in `AT_GATE`)."""
    from sklearn.metrics import roc_auc_score

    gate, val_free = operating_gate(arm, splits)
    scores: dict[str, float] = {"val gate": gate, "val free images": val_free}
    rare_scores: list[float] = []
    for name, parts in (("test", ("test",)), ("heldout", ("val", "test"))):
        for cls in exp.rare:
            rels = [r for s in parts for r in splits[s] if r.startswith(f"MT_{cls}/")]
            probs, labels, image_scores = arm.predict(rels, name)
            pairs = [(p.argmax(0) > 0, t > 0) for p, t in zip(probs, labels, strict=True)]
            key = cls if name == "test" else f"{cls} (val+test)"
            pixel = _pixel_scores(pairs)
            scores[key] = pixel["dice"]
            scores[f"{key} images"] = len(rels)
            if name == "test":
                scores |= {f"{cls} {k}": v for k, v in pixel.items() if k != "dice"}
                at_gate = _pixel_scores(_gated_pairs(probs, labels, image_scores, gate))
                scores[f"{cls} {AT_GATE}"] = at_gate["dice"]
                scores |= {f"{cls} {k} {AT_GATE}": at_gate[k] for k in ("precision", "recall")}
                rare_scores += image_scores
    free, free_scores = _free_scores(arm, splits, gate)
    scores |= free
    if free_scores and rare_scores:
        truth = [1] * len(rare_scores) + [0] * len(free_scores)
        scores["image_auroc"] = float(roc_auc_score(truth, rare_scores + free_scores))
    return scores


def run_segmentation(
    exp: Experiment,
    root: Path,
    out: Path,
    budget: Budget,
    synthetic: Path | None,
    ratio: float,
    online=None,
) -> dict:
    """Train the segmentation arm into `out` (synthetic share from the folder `synthetic`, or
    made while training by `online`); score its final weights (with the image head fitted on
    them, on the real training images, where the recipe has one)."""
    import torch

    from vision.segment.model import build_model
    from vision.segment.train import train

    torch.set_num_threads(budget.threads)
    recipe = segmentation_recipe(exp, budget)
    summary = train(recipe, root, out, synthetic=synthetic, ratio=ratio, online=online)
    arm, head_auroc = _final_arm(recipe, root, out, build_model(recipe))
    splits = json.loads((out / "splits.json").read_text())["splits"]
    steps = recipe.epochs * recipe.steps_per_epoch
    scores = score_segmentation(arm, splits, exp)
    if head_auroc is not None:
        scores["image head train AUROC"] = head_auroc
    history = json.loads((out / "history.json").read_text())["history"]
    return {
        "scores": scores,
        "steps": steps,
        "train_seconds": round(summary["elapsed_s"], 1),
        "image_score": "image head" if head_auroc is not None else "largest defect probability",
        "val_curve": [row["val_dice"] for row in history if "val_dice" in row],
    }


def _final_arm(recipe, root: Path, out: Path, model) -> tuple[Scored, float | None]:
    """The arm's last weights as a `Scored` (the image head fitted on them into last.pt, as
    stage 1 fits it into best.pt) and the head's training AUROC (None without a head)."""
    import torch

    from vision.segment.image_head import with_image_score
    from vision.segment.train import Prepared, attach_image_head, load_splits

    last = out / "last.pt"
    model.load_state_dict(torch.load(last, weights_only=False)["model"])
    if "image_head" not in recipe.extra:
        return Scored(model, recipe, root), None
    real_train = Prepared.of(load_splits(recipe, root, out)["train"], recipe)
    head = attach_image_head(last, recipe, real_train)
    return Scored(model, recipe, root, with_image_score(model, head)), head["train_auroc"]


def detection_recipe(exp: Experiment, data: Path, budget: Budget):
    """The experiment's small detection recipe (step budget only, no time budget)."""
    from vision.detect.recipes import RECIPES

    overrides = dict(exp.overrides)
    if budget.epochs:
        overrides["epochs"] = budget.epochs
    data = str(Path(data).resolve())
    return dataclasses.replace(RECIPES[exp.recipe], data=data, minutes=0.0, **overrides)


def _spread(items: list, limit: int) -> list:
    if not limit or len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx))]


def run_detection(
    exp: Experiment,
    data: Path,
    out: Path,
    budget: Budget,
    synthetic: Path | None,
    ratio: float,
) -> dict:
    """Train the detection arm into `out`; score its final EMA weights on the real test split."""
    from vision.datasets.detection import load_dataset
    from vision.detect.data import DetectionDataset
    from vision.detect.train import Trainer, validate

    recipe = detection_recipe(exp, data, budget)
    trainer = Trainer(
        recipe, out, budget.seed, budget.threads, budget.train_limit or None, synthetic, ratio
    )
    size = (recipe.height, recipe.width)
    val = _spread(trainer.val_ds.samples, exp.val_limit)
    trainer.val_ds = DetectionDataset(val, recipe.channels, size)
    state = trainer.fit()
    test, labels = load_dataset(recipe.format, recipe.data_path(), recipe.test_split)
    test = _spread(test, budget.test_limit or exp.test_limit)
    assert_no_synthetic([s.image for s in test], "test")
    result = validate(
        trainer.ema.model, DetectionDataset(test, recipe.channels, size), recipe, len(labels)
    )
    ap = dict(zip(labels, result["ap"], strict=True))
    scores = {cls: ap[cls] for cls in exp.rare}
    scores.update({"mAP (all classes)": result["map"], "test images": len(test)})
    rare_ids = [labels.index(c) for c in exp.rare]
    train_boxes = sum(int(np.isin(s.labels, rare_ids).sum()) for s in trainer.train_ds.samples)
    steps = recipe.epochs * math.ceil(len(trainer.train_ds) / recipe.batch)
    return {
        "scores": scores,
        "steps": min(state["step"], steps),
        "train_seconds": round(state["elapsed"], 1),
        "rare_training_boxes": train_boxes,
    }
