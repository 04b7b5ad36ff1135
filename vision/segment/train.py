"""Training loop: seeded, time-budgeted, checkpointed each epoch, resumable."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vision.datasets import segmentation
from vision.datasets.extra import ExtraImages, ExtraImagesFactory
from vision.datasets.mixing import defect_positions, mixed_positions, tile_relpaths
from vision.datasets.provenance import assert_no_synthetic
from vision.errors import ConfigError
from vision.reports import plot_curves, write_json
from vision.segment import data as segdata
from vision.segment.metrics import defect_metrics, headline, vessel_metrics
from vision.segment.model import Recipe, build_model, model_config

Mix = tuple[int, float]  # (synthetic images appended to the training data, share per batch)


@dataclass
class Prepared:
    """Samples at model input size: inputs (N,C,H,W), labels (N,H,W), FOVs (N,H,W), names."""

    inputs: np.ndarray
    labels: np.ndarray
    fovs: np.ndarray
    names: list[str]

    @classmethod
    def of(cls, samples: list[segmentation.Sample], recipe: Recipe) -> Prepared:
        """Prepare `samples` at the input size of `recipe`'s model config."""
        config = model_config(recipe)
        views = [segdata.prepare(s, config) for s in samples]
        return cls(
            np.stack([v[0] for v in views]),
            np.stack([v[1] for v in views]),
            np.stack([v[2] for v in views]),
            [s.name for s in samples],
        )

    def join(self, other: Prepared) -> Prepared:
        """These samples followed by `other`'s."""
        return Prepared(
            np.concatenate([self.inputs, other.inputs]),
            np.concatenate([self.labels, other.labels]),
            np.concatenate([self.fovs, other.fovs]),
            self.names + other.names,
        )


def load_splits(recipe: Recipe, root: Path, out: Path) -> dict[str, list[segmentation.Sample]]:
    """Train and val samples for a recipe; the split is recorded in `out/splits.json`."""
    if recipe.dataset == "drive":
        val = list(recipe.extra["val_images"])
        train = [s for s in segmentation.load_drive(root, "training") if s.name not in val]
        return {"train": train, "val": segmentation.load_drive(root, "training", val)}
    if recipe.dataset == "folder":
        samples = segmentation.load_folder(
            Path(recipe.extra["images"]), Path(recipe.extra["masks"])
        )
        by_name = {s.name: s for s in samples}
        splits = segmentation.folder_split(sorted(by_name), out / "splits.json", recipe.seed)
        return {k: [by_name[n] for n in splits[k]] for k in ("train", "val")}
    splits = segmentation.tile_split(
        root, out / "splits.json", seed=recipe.extra.get("split_seed", 0)
    )
    binary = len(recipe.labels) == 2
    return {k: segmentation.load_tile(root, splits[k], binary) for k in ("train", "val")}


def recipe_online(
    recipe: Recipe, root: Path, splits: dict, make_online: ExtraImagesFactory | None
) -> tuple[ExtraImages, float]:
    """The recipe's own online synthesis (`extra["online_synth"]`: classes, ratio, generator,
    reuse), built by the caller's `make_online` (e.g. `vision.synth.online.from_spec`) and
    drawing only on images of the recorded training split; (extra images, batch share)."""
    spec = recipe.extra["online_synth"]
    if make_online is None:
        raise ConfigError(
            f"recipe {recipe.name} makes synthetic images while training "
            '(extra["online_synth"]): the caller must pass make_online '
            "(vision.synth.online.from_spec)"
        )
    online = make_online(spec, recipe.dataset, root, recipe.seed)
    train_names = {s.name for s in splits["train"]}
    used = online.source_images()
    if not used <= train_names:
        raise ValueError(
            f"online synthesis sources outside the training split: {len(used - train_names)}"
        )
    return online, float(spec["ratio"])


def load_synthetic(recipe: Recipe, folder: Path) -> Prepared:
    """Synthetic training samples written by `vision synth` (magnetic-tile layout)."""
    if recipe.dataset != "magnetic-tile":
        raise ConfigError(f"--synthetic: no synthetic data for {recipe.dataset} (magnetic-tile)")
    binary = len(recipe.labels) == 2
    return Prepared.of(segmentation.load_tile(folder, tile_relpaths(folder), binary), recipe)


class CropDataset(Dataset):
    """Random crops (or whole images) with flips, 90-degree turns and mild intensity jitter."""

    def __init__(
        self,
        data: Prepared,
        recipe: Recipe,
        length: int,
        epoch_seed: int,
        mix: Mix = (0, 0.0),
        online: ExtraImages | None = None,
    ) -> None:
        self.data, self.recipe, self.length = data, recipe, length
        self.rng = np.random.default_rng(epoch_seed)
        real = self._order(epoch_seed, len(data.labels) - mix[0])
        self.order = self._mixed(real, mix, epoch_seed)
        self.online, self.first_index = online, epoch_seed * max(length, 1)
        self.made = None  # online: True where item i is synthetic, at `mix[1]` of each batch
        self.numbers: dict[int, int] = {}  # item -> number of the synthetic image it shows
        self.cache: dict[int, tuple | None] = {}
        self.config = model_config(recipe) if online is not None else None
        if online is not None and mix[1] > 0:
            self.made = self._synthetic_positions(self.order, mix[1], epoch_seed + 7)
            self.numbers = self._numbers(self.made, recipe.batch_size, online.reuse)

    def _numbers(self, made: np.ndarray, batch: int, reuse: int) -> dict[int, int]:
        """Synthetic image number per synthetic item: slot s of global batch b shows image
        (b // reuse) * batch + s, so each image serves `reuse` consecutive batches (different
        crops) and each batch's synthetic items are distinct images."""
        numbers = {}
        for i in np.flatnonzero(made):
            start = i - i % batch
            slot = int(made[start:i].sum())
            global_batch = (self.first_index + start) // batch
            numbers[int(i)] = (global_batch // reuse) * batch + slot
        return numbers

    def _made(self, number: int) -> tuple | None:
        """Prepared synthetic image `number` (kept while the batches that use it run)."""
        if number not in self.cache:
            if len(self.cache) >= 2 * self.recipe.batch_size:
                self.cache.pop(next(iter(self.cache)))
            item = self.online.labelled(number, binary=len(self.recipe.labels) == 2)
            prepared = None
            if item is not None:
                sample = segmentation.Sample(
                    item.name, item.image, item.labels, None, "synthetic", ""
                )
                prepared = segdata.prepare(sample, self.config)
            self.cache[number] = prepared
        return self.cache[number]

    def _source(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input, labels and FOV of item i: a real (or stored synthetic) image, or a synthetic
        one made while training (a real one again where generation placed nothing)."""
        if i in self.numbers and (made := self._made(self.numbers[i])) is not None:
            return made
        k = int(self.order[i])
        return self.data.inputs[k], self.data.labels[k], self.data.fovs[k]

    def _mixed(self, order: np.ndarray, mix: Mix, seed: int) -> np.ndarray:
        """Replace `ratio` of each batch with the trailing `n_synth` (synthetic) images."""
        n_synth, ratio = mix
        if not n_synth or not ratio:
            return order
        synth = self._synthetic_positions(order, ratio, seed + 7)
        rng = np.random.default_rng(seed + 11)
        first = len(self.data.labels) - n_synth
        order[synth] = first + rng.integers(0, n_synth, int(synth.sum()))
        return order

    def _synthetic_positions(self, order: np.ndarray, ratio: float, seed: int) -> np.ndarray:
        """Where synthetic items go: anywhere in a batch, or with `extra["synthetic_replaces"]`
        = "defect" only in place of real defect images (the defect-free share stays the real
        order's, so the synthetic images do not raise the defect prior)."""
        batch = self.recipe.batch_size
        replaces = self.recipe.extra.get("synthetic_replaces", "any")
        if replaces == "any":
            return mixed_positions(len(order), batch, ratio, seed)
        if replaces != "defect":
            raise ValueError(f'extra.synthetic_replaces: "any" or "defect", not {replaces!r}')
        labels = self.data.labels
        has_defect = labels.reshape(len(labels), -1).any(1)
        return defect_positions(has_defect[order], batch, ratio, seed)

    def _order(self, seed: int, n: int) -> np.ndarray:
        """Real image indices; with `free_per_epoch`, images with and without foreground
        balanced."""
        rng = np.random.default_rng(seed)
        has_fg = self.data.labels[:n].reshape(n, -1).any(1)
        fg, bg = np.flatnonzero(has_fg), np.flatnonzero(~has_fg)
        ratio = self.recipe.extra.get("free_per_epoch")
        if ratio is None or not len(bg) or not len(fg):
            return rng.integers(0, n, self.length)
        pick_fg = rng.random(self.length) < 1.0 / (1.0 + ratio)
        return np.where(pick_fg, rng.choice(fg, self.length), rng.choice(bg, self.length))

    def _crop_origin(self, labels: np.ndarray, fov: np.ndarray, size: int) -> tuple[int, int]:
        """Top-left of a crop: near a random foreground pixel with probability `fg_center`, else
        anywhere over the image (letterbox padding left out where the image allows)."""
        h, w = labels.shape
        fg_center = self.recipe.extra.get("fg_center", 0.0)
        if fg_center and self.rng.random() < fg_center and labels.any():
            ys, xs = np.nonzero(labels)
            j = self.rng.integers(len(ys))
            jitter = self.rng.integers(-size // 4, size // 4 + 1, 2)
            top, left = ys[j] - size // 2 + jitter[0], xs[j] - size // 2 + jitter[1]
            return int(np.clip(top, 0, h - size)), int(np.clip(left, 0, w - size))
        ys, xs = np.nonzero(fov.any(1))[0], np.nonzero(fov.any(0))[0]  # the image, not padding
        top_max = max(int(ys[0]), min(int(ys[-1]) + 1, h) - size)
        left_max = max(int(xs[0]), min(int(xs[-1]) + 1, w) - size)
        top = int(self.rng.integers(int(ys[0]), top_max + 1))
        left = int(self.rng.integers(int(xs[0]), left_max + 1))
        return min(top, h - size), min(left, w - size)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, fov = self._source(i)
        c = self.recipe.crop
        if c:
            top, left = self._crop_origin(y, fov, c)
            x, y = x[:, top : top + c, left : left + c], y[top : top + c, left : left + c]
        if self.rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        if self.rng.random() < 0.5:
            x, y = x[:, ::-1], y[::-1]
        if c and self.rng.random() < 0.5:
            x, y = x.transpose(0, 2, 1), y.T
        gain, shift = self.rng.uniform(0.85, 1.15), self.rng.uniform(-0.15, 0.15)
        x = x * np.float32(gain) + np.float32(shift)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def training_device() -> torch.device:
    """CUDA when present (VISION_TRAIN_DEVICE overrides), else CPU."""
    name = os.environ.get("VISION_TRAIN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: np.ndarray, batch: int = 4) -> list[np.ndarray]:
    """Softmax probabilities (C,H,W) for each input (N,C,H,W), at input size."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(inputs), batch):
        logits = model(torch.from_numpy(inputs[i : i + batch]).to(device))
        out += list(torch.softmax(logits, 1).cpu().numpy())
    return out


def validate(model: torch.nn.Module, data: Prepared, recipe: Recipe) -> dict:
    """Validation metrics at model input size (the final numbers come from ONNX evaluation)."""
    probs = predict(model, data.inputs)
    if recipe.dataset in ("drive", "folder"):
        return vessel_metrics(probs, list(data.labels), list(data.fovs))
    regions = int(recipe.extra.get("max_regions", 0))
    metrics = defect_metrics(probs, list(data.labels), recipe.labels, regions)
    metrics.pop("per_class")
    return metrics


def foreground_dice_ce(
    logits: torch.Tensor, target: torch.Tensor, weights: list[float] | None = None
) -> torch.Tensor:
    """Class-weighted cross-entropy plus a batch soft Dice of "any foreground" (1 - p_bg).

    Unlike a per-class Dice, classes absent from a batch are not punished for any probability
    mass, which otherwise drives sparse multi-class defect data to "all background".
    """
    weight = None
    if weights is not None:
        weight = torch.tensor(weights, dtype=logits.dtype, device=logits.device)
    ce = functional.cross_entropy(logits, target[:, 0], weight=weight)
    fg = 1.0 - torch.softmax(logits, 1)[:, 0]
    truth = (target[:, 0] > 0).float()
    dice = (2 * (fg * truth).sum() + 1.0) / (fg.sum() + truth.sum() + 1.0)
    return ce + (1.0 - dice)


def make_loss(recipe: Recipe) -> Any:
    """The recipe's loss: logits (N,C,H,W), target (N,1,H,W) int64 -> scalar."""
    if recipe.loss == "ce_fgdice":
        weights = recipe.extra.get("ce_weights")
        return lambda logits, target: foreground_dice_ce(logits, target, weights)
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr(recipe: Recipe, progress: float, step: int) -> float:
    """Cosine decay over max(epoch fraction, time fraction), after a 100-step linear warm-up."""
    warm = min(1.0, (step + 1) / 100)
    return recipe.lr * warm * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _state(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def at_epoch(recipe: Recipe, epoch: int) -> tuple[Recipe, int, int]:
    """The recipe as it trains at `epoch`: `extra["phases"]` entries whose `from_epoch` has been
    reached override `extra` keys and `lr`; also the epoch span of that phase (the cosine
    learning-rate schedule restarts at each phase)."""
    starts = [0] + [p["from_epoch"] for p in recipe.extra.get("phases", [])]
    ends = starts[1:] + [recipe.epochs]
    index = max(i for i, start in enumerate(starts) if epoch >= start)
    extra, lr = dict(recipe.extra), recipe.lr
    for phase in recipe.extra.get("phases", [])[:index]:
        extra |= {k: v for k, v in phase.items() if k not in ("from_epoch", "lr")}
        lr = phase.get("lr", lr)
    return dataclasses.replace(recipe, extra=extra, lr=lr), starts[index], ends[index]


def _epoch(
    model, optim, loss_fn, data: Prepared, recipe: Recipe, epoch: int, clock, mix: Mix, online=None
) -> float:
    """One training epoch; `clock()` is the training time spent so far (seconds); `mix` is
    (trailing synthetic images in `data`, their share of each batch); with `online`, that share
    is made fresh (an injected `ExtraImages`)."""
    recipe, first, last = at_epoch(recipe, epoch)
    loss_fn = make_loss(recipe) if recipe.extra.get("phases") else loss_fn
    length = recipe.steps_per_epoch * recipe.batch_size or len(data.labels) - mix[0]
    dataset = CropDataset(data, recipe, length, recipe.seed * 1000 + epoch, mix, online)
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=False, drop_last=True)
    model.train()
    device = next(model.parameters()).device
    losses = []
    bar = tqdm(loader, desc=f"{recipe.name} epoch {epoch + 1}", leave=False, mininterval=5)
    for i, (x, y) in enumerate(bar):
        phase_progress = (epoch - first + i / len(loader)) / (last - first)
        progress = max(phase_progress, clock() / (recipe.minutes * 60))
        for group in optim.param_groups:
            group["lr"] = _lr(recipe, progress, epoch * len(loader) + i)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y[:, None])
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
    return float(np.mean(losses))


def _validates(recipe: Recipe, epoch: int) -> bool:
    """Validate after every `extra["val_every"]`-th epoch (default every one) and the last."""
    return epoch % int(recipe.extra.get("val_every", 1)) == 0 or epoch >= recipe.epochs


def _save(out: Path, model, optim, recipe: Recipe, progress: dict, metrics: dict | None) -> None:
    """last.pt (everything to resume), best.pt when `metrics` is given, history + curves."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    common = {"model": weights, "recipe": recipe.to_dict(), "epoch": progress["epoch"]}
    if metrics is not None:
        torch.save({**common, "val": metrics}, out / "best.pt")
    resume = {"optim": optim.state_dict(), "torch_rng": torch.get_rng_state()}
    torch.save({**common, **resume, **progress}, out / "last.pt")
    write_json({"recipe": recipe.to_dict(), "history": progress["history"]}, out / "history.json")
    plot_curves(progress["history"], out / "curves.png", title=recipe.name)


def train(
    recipe: Recipe,
    root: Path,
    out: Path,
    resume: bool = False,
    synthetic: Path | None = None,
    ratio: float = 0.0,
    online: ExtraImages | None = None,
    make_online: ExtraImagesFactory | None = None,
) -> dict:
    """Train `recipe` on data under `root` (plus `ratio` of each batch from the `vision synth`
    folder `synthetic`, or made fresh by `online`; a recipe with `extra["online_synth"]` gets
    its images from `make_online`); writes last.pt, best.pt, history.json, curves.png."""
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(recipe.seed)
    splits = load_splits(recipe, root, out)
    assert_no_synthetic([s.path for s in splits["val"] if s.path], "val")
    train_data, val_data = Prepared.of(splits["train"], recipe), Prepared.of(splits["val"], recipe)
    real_train, mix = train_data, (0, 0.0)
    if synthetic is not None and ratio > 0:
        synth_data = load_synthetic(recipe, Path(synthetic))
        train_data, mix = train_data.join(synth_data), (len(synth_data.labels), ratio)
    elif online is None and recipe.extra.get("online_synth"):
        online, ratio = recipe_online(recipe, root, splits, make_online)
    if online is not None and ratio > 0:
        mix = (0, ratio)
    model = build_model(recipe).to(training_device())
    optim = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    loss_fn = make_loss(recipe)
    progress = {"epoch": 0, "elapsed": 0.0, "best": -1.0, "history": []}
    state = _state(out / "last.pt") if resume else None
    if state:
        model.load_state_dict(state["model"])  # (CPU tensors copied onto the model's device)
        optim.load_state_dict(state["optim"])
        torch.set_rng_state(state["torch_rng"])
        progress = {k: state[k] for k in progress}
    while progress["epoch"] < recipe.epochs and progress["elapsed"] < recipe.minutes * 60:
        start = time.monotonic()
        spent = progress["elapsed"]
        loss = _epoch(
            model,
            optim,
            loss_fn,
            train_data,
            recipe,
            progress["epoch"],
            lambda spent=spent, start=start: spent + time.monotonic() - start,
            mix,
            online,
        )
        progress["epoch"] += 1
        last = progress["elapsed"] + time.monotonic() - start >= recipe.minutes * 60
        due = last or _validates(recipe, progress["epoch"])
        metrics = validate(model, val_data, recipe) if due else {}
        progress["elapsed"] += time.monotonic() - start
        score = headline(recipe.name, metrics) if metrics else -1.0
        row = {
            "epoch": progress["epoch"],
            "loss": loss,
            "lr": optim.param_groups[0]["lr"],
            "elapsed_s": round(progress["elapsed"], 1),
            **({"score": score} if metrics else {}),
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        progress["history"].append(row)
        tqdm.write(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )
        improved = bool(metrics) and score > progress["best"]
        progress["best"] = max(score, progress["best"])
        _save(out, model, optim, recipe, progress, metrics if improved else None)
    head = (
        attach_image_head(out / "best.pt", recipe, real_train)
        if "image_head" in recipe.extra
        else {}
    )
    return {
        "epochs": progress["epoch"],
        "elapsed_s": progress["elapsed"],
        "best_score": progress["best"],
        **({"image_head_train_auroc": head["train_auroc"]} if head else {}),
    }


def attach_image_head(best: Path, recipe: Recipe, data: Prepared) -> dict:
    """Fit the recipe's image-level defect head on the best checkpoint's pooled features of the
    training images (whole images at input size) and record it in that checkpoint."""
    from vision.segment.image_head import fit_head, pooled_features

    state = torch.load(best, map_location="cpu", weights_only=False)
    spec = recipe.extra["image_head"]
    model = build_model(recipe)
    model.load_state_dict(state["model"])
    features = pooled_features(model, spec["layers"], data.inputs)
    has_defect = (data.labels.reshape(len(data.labels), -1) > 0).any(1)
    head = {**fit_head(features, has_defect, float(spec["C"]), recipe.seed), **spec}
    torch.save({**state, "recipe": recipe.to_dict(), "image_head": head}, best)
    tqdm.write(f"image head: train AUROC {head['train_auroc']:.4f} on {len(has_defect)} images")
    return head
