"""Training loop: seeded, time-budgeted cosine schedule, EMA weights, resumable checkpoints."""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms
from tqdm import tqdm

from vision.datasets.detection import Sample, load_dataset, split_holdout
from vision.datasets.mixing import MixedBatchSampler, detection_samples
from vision.datasets.provenance import assert_no_synthetic
from vision.detect.data import DetectionDataset, collate
from vision.detect.loss import detection_loss
from vision.detect.metrics import Boxes, ap_per_class, mean_present
from vision.detect.model import Detector, DetectorSpec, build_model
from vision.detect.recipes import Recipe

WARMUP_STEPS = 100


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def splits(recipe: Recipe) -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    """Training and validation samples of a recipe, and its class names."""
    train, labels = load_dataset(recipe.format, recipe.data_path(), recipe.train_split)
    if recipe.val_split:
        val, _ = load_dataset(recipe.format, recipe.data_path(), recipe.val_split, labels)
    else:
        train, val = split_holdout(train, recipe.holdout or max(1, len(train) // 10))
    return train, val, labels


def spec_of(recipe: Recipe, num_classes: int) -> DetectorSpec:
    """The detector architecture of a recipe with `num_classes` classes."""
    return DetectorSpec(recipe.channels, num_classes, recipe.widths, recipe.neck, recipe.strides)


@torch.no_grad()
def predict(
    model: Detector,
    images: torch.Tensor,
    score_thr: float = 0.001,
    iou_thr: float = 0.5,
    max_det: int = 300,
) -> list[Boxes]:
    """Boxes per image in input pixels (best class per anchor, per-class NMS)."""
    logits, boxes, _ = model(images)
    out = []
    for lg, bx in zip(logits.sigmoid(), boxes, strict=True):
        scores, labels = lg.max(1)
        keep = scores > score_thr
        bx, scores, labels = bx[keep], scores[keep], labels[keep]
        keep = batched_nms(bx, scores, labels, iou_thr)[:max_det]
        out.append(Boxes(bx[keep].numpy(), labels[keep].numpy(), scores[keep].numpy()))
    return out


def validate(model: Detector, dataset: DetectionDataset, recipe: Recipe, num_classes: int) -> dict:
    """Headline mAP (at the recipe's match IoU) of `model` on `dataset`, in input coordinates."""
    model.eval()
    preds, truths = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate)
    for images, targets in loader:
        preds += predict(model, images, iou_thr=recipe.iou_threshold)
        truths += [Boxes.truth(t[:, 1:].numpy(), t[:, 0].long().numpy()) for t in targets]
    strict = recipe.match_iou < 0.5
    ap = ap_per_class(preds, truths, num_classes, recipe.match_iou, strict=strict)
    ap_or_absent = [None if np.isnan(a) else round(float(a), 4) for a in ap]
    return {"map": mean_present(ap), "ap": ap_or_absent}


class Ema:
    """Exponential moving average of the weights (decay ramps up over the first steps)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.998, tau: float = 200.0) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the averaged weights towards `model`'s (integer buffers are copied)."""
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        source = model.state_dict()
        for key, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)
            else:
                value.copy_(source[key])


def learning_rate(recipe: Recipe, step: int, progress: float) -> float:
    """Warm-up, then cosine decay to 5% of the recipe's lr, by `progress` in [0, 1]."""
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    return recipe.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` to `path` via a temporary file, so a crash leaves no partial file."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def plot_curves(history: list[dict], path: Path) -> None:
    """Plot training losses and validation mAP per epoch into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["loss"] for h in history], label="total")
    ax1.plot(epochs, [h["cls"] for h in history], label="cls")
    ax1.plot(epochs, [h["box"] for h in history], label="box (GIoU)")
    ax1.set(xlabel="epoch", ylabel="train loss", title="loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_map"] for h in history], marker="o")
    ax2.set(xlabel="epoch", ylabel="val mAP", title="validation mAP", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


class Trainer:
    """Owns the model, optimiser, data and checkpoint state of one training run."""

    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        seed: int = 0,
        threads: int = 1,
        limit: int | None = None,
        synthetic: Path | None = None,
        ratio: float = 0.0,
    ) -> None:
        torch.set_num_threads(threads)
        seed_everything(seed)
        self.recipe, self.out, self.seed = recipe, out, seed
        out.mkdir(parents=True, exist_ok=True)
        train, val, self.labels = splits(recipe)
        if limit:
            train, val = train[:limit], val[: max(1, limit // 2)]
        assert_no_synthetic([s.image for s in val], "val")
        self.train_ds = DetectionDataset(
            train,
            recipe.channels,
            recipe.train_size,
            recipe.train_mode,
            train=True,
            rotate=recipe.rotate,
            seed=seed,
        )
        self.val_ds = DetectionDataset(val, recipe.channels, (recipe.height, recipe.width))
        self.synth_ds, self.ratio = None, ratio if synthetic else 0.0
        if synthetic and ratio > 0:
            self.synth_ds = self._synthetic(Path(synthetic), seed)
        self.spec = spec_of(recipe, len(self.labels))
        self.model = build_model(self.spec)
        self.ema = Ema(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=recipe.lr, weight_decay=0.01)
        self.state = {"epoch": 0, "step": 0, "elapsed": 0.0, "best": -1.0, "history": []}

    def _synthetic(self, folder: Path, seed: int) -> DetectionDataset:
        """The `vision synth` images of `folder` as a second training set (same augmentation)."""
        r = self.recipe
        samples = detection_samples(folder, r.format, self.labels)
        size, mode = r.train_size, r.train_mode
        return DetectionDataset(samples, r.channels, size, mode, True, r.rotate, seed=seed + 1)

    def loader(self) -> torch.utils.data.DataLoader:
        """Shuffled real batches, or batches mixing in `ratio` synthetic images each."""
        r = self.recipe
        if self.synth_ds is None:
            return torch.utils.data.DataLoader(
                self.train_ds,
                batch_size=r.batch,
                shuffle=True,
                collate_fn=collate,
                drop_last=len(self.train_ds) > r.batch,  # a split under one batch still trains
            )
        sampler = MixedBatchSampler(
            len(self.train_ds),
            len(self.synth_ds),
            r.batch,
            self.ratio,
            len(self.train_ds) // r.batch,
            self.seed * 1000 + self.state["epoch"],
        )
        data = torch.utils.data.ConcatDataset([self.train_ds, self.synth_ds])
        return torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate)

    def resume(self, path: Path) -> None:
        """Restore model, EMA, optimiser and run state from checkpoint `path`."""
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(ckpt["model"])
        self.ema.model.load_state_dict(ckpt["ema"])
        self.ema.updates = ckpt["state"]["step"]
        self.opt.load_state_dict(ckpt["optimizer"])
        self.state = ckpt["state"]
        seed_everything(self.seed + self.state["epoch"])

    def checkpoint(self, ema_only: bool = False) -> dict:
        """EMA weights, spec, recipe, labels, state; also model and optimiser unless `ema_only`."""
        data = {
            "ema": self.ema.model.state_dict(),
            "spec": self.spec.to_dict(),
            "recipe": self.recipe.to_dict(),
            "labels": list(self.labels),
            "state": self.state,
        }
        if not ema_only:
            data.update(model=self.model.state_dict(), optimizer=self.opt.state_dict())
        return data

    def progress(self) -> float:
        """Fraction of the run done: the larger of steps and elapsed time over their budgets."""
        steps = self.recipe.epochs * max(1, len(self.train_ds) // self.recipe.batch)
        by_time = self.state["elapsed"] / (self.recipe.minutes * 60) if self.recipe.minutes else 0
        return max(self.state["step"] / max(steps, 1), by_time)

    def train_epoch(self) -> dict:
        """Train one epoch (or until the budget is spent); returns the mean losses."""
        self.model.train()
        loader = self.loader()
        totals = {"loss": 0.0, "cls": 0.0, "box": 0.0}
        bar = tqdm(loader, desc=f"epoch {self.state['epoch'] + 1}", mininterval=20)
        count = 0
        start = time.monotonic()
        for images, targets in bar:
            lr = learning_rate(self.recipe, self.state["step"], self.progress())
            for group in self.opt.param_groups:
                group["lr"] = lr
            logits, boxes, anchors = self.model(images)
            loss, parts = detection_loss(logits, boxes, anchors, targets)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
            self.opt.step()
            self.ema.update(self.model)
            self.state["step"] += 1
            self.state["elapsed"] += time.monotonic() - start
            start = time.monotonic()
            count += 1
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                totals[key] += value
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.2e}")
            if self.progress() >= 1.0:
                break
        return {k: v / max(count, 1) for k, v in totals.items()}

    def fit(self) -> dict:
        """Train until the epoch or time budget is spent; returns the final state."""
        torch.manual_seed(self.seed + self.state["epoch"])
        while self.progress() < 1.0:
            losses = self.train_epoch()
            self.state["epoch"] += 1
            due = self.state["epoch"] % max(1, self.recipe.val_every) == 0
            if due or self.progress() >= 1.0:
                self._validate(losses)
            save_checkpoint(self.out / "last.pt", self.checkpoint())
        return self.state

    def _validate(self, losses: dict) -> None:
        """Validate the EMA model; record the epoch, keep best.pt, write the log and curves."""
        start = time.monotonic()
        val = validate(self.ema.model, self.val_ds, self.recipe, len(self.labels))
        self.state["elapsed"] += time.monotonic() - start
        record = {
            "epoch": self.state["epoch"],
            "step": self.state["step"],
            "elapsed_s": round(self.state["elapsed"], 1),
            **losses,
            "val_map": val["map"],
            "val_ap": val["ap"],
        }
        self.state["history"].append(record)
        print(json.dumps(record), flush=True)
        if val["map"] > self.state["best"]:
            self.state["best"] = val["map"]
            save_checkpoint(self.out / "best.pt", self.checkpoint(ema_only=True))
        log = {"recipe": self.recipe.to_dict(), "history": self.state["history"]}
        (self.out / "log.json").write_text(json.dumps(log, indent=1))
        plot_curves(self.state["history"], self.out / "curve.png")
