"""Stage 2 of a segmentation recipe: fine-tune served weights with a jointly trained image head.

Stage 1 (`vision.segment.train`) trains the segmenter and fits its image-level head afterwards,
a logistic regression on pooled encoder features of the training images. That head is fitted
in-sample on features the segmenter has over-fitted, so it is optimistic and ranks unseen
tiles worse. Here the served network (its `weights.safetensors`, segmenter + head) is trained
further on two batches per step:

- the recipe's crops (as in its last phase, online copy-paste included), segmentation loss;
- whole tiles at input size, half defect-free and half with a defect, with the segmentation
  loss (defect-free tiles teach "no mask here") plus a binary cross-entropy on the image head,
  so the encoder learns features that separate the two and the head is trained as it is served.

The weights come from an ONNX export (BatchNorm folded into identity layers), so BatchNorm
stays in eval mode: its running statistics are not batch statistics and must not be replaced.
Validation (every `val_every` epochs, at input size) scores the masks as served: the image-score
gate is the lowest that keeps masks on at most `max_free_rate` of the defect-free tiles, and the
checkpoint kept is the one with the best 0.5 * (gated Dice + image AUROC). Checkpoint each
epoch (`last.pt`), `--resume` continues where it stopped.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional
from tqdm import tqdm

from vision.reports import plot_curves, write_json
from vision.segment.image_head import WithImageScore
from vision.segment.metrics import dice_iou, served_masks
from vision.segment.model import Recipe, build_model
from vision.segment.train import (
    CropDataset,
    Prepared,
    at_epoch,
    load_splits,
    make_loss,
    recipe_online,
    seed_everything,
    training_device,
)

DEFAULTS = {
    "lr": 2e-4,
    "head_lr": 1e-3,
    "whole_per_step": 8,
    "head_weight": 0.5,
    "whole_seg_weight": 0.5,
    "val_every": 2,
    "max_free_rate": 0.10,
    "epochs": 60,
    "minutes": 60.0,
}


def _spec(recipe: Recipe) -> dict:
    return {**DEFAULTS, **recipe.extra.get("finetune", {})}


def load_served(recipe: Recipe, weights: Path) -> WithImageScore:
    """The served network (segmenter + image head) from its `weights.safetensors`."""
    from safetensors.torch import load_file

    state = load_file(str(weights))
    layers = recipe.extra["image_head"]["layers"]
    width = state["head.weight"].shape[1]
    model = WithImageScore(build_model(recipe), layers, np.zeros(width), 0.0)
    model.load_state_dict(state)
    return model


def _train_mode(model: torch.nn.Module) -> None:
    """Train mode with every BatchNorm left in eval mode (folded statistics stay as they are)."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _whole_batch(data: Prepared, rng: np.random.Generator, n: int) -> tuple:
    """`n` whole tiles, half defect-free, half with a defect, flipped/turned/jittered."""
    has = data.labels.reshape(len(data.labels), -1).any(1)
    picks = np.concatenate(
        [rng.choice(np.flatnonzero(~has), n // 2), rng.choice(np.flatnonzero(has), n - n // 2)]
    )
    xs, ys = [], []
    for k in picks:
        x, y = data.inputs[k], data.labels[k]
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[::-1]
        if x.shape[1] == x.shape[2] and rng.random() < 0.5:
            x, y = x.transpose(0, 2, 1), y.T
        gain, shift = rng.uniform(0.85, 1.15), rng.uniform(-0.15, 0.15)
        xs.append(np.ascontiguousarray(x * np.float32(gain) + np.float32(shift)))
        ys.append(np.ascontiguousarray(y))
    target = torch.from_numpy(has[picks].astype(np.float32))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), target


def _lr_factor(progress: float, step: int) -> float:
    """Cosine decay after a 50-step warm-up."""
    return min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _step(model: WithImageScore, optim, loss_fn, crops, whole, spec: dict) -> dict:
    """One optimiser step on a crop batch and a whole-tile batch; the losses."""
    device = next(model.parameters()).device
    x, y = (t.to(device) for t in crops)
    seg = loss_fn(model.features.model(x), y[:, None])
    wx, wy, target = (t.to(device) for t in whole)
    logits, pooled = model.features(wx)
    seg_whole = loss_fn(logits, wy[:, None])
    head = functional.binary_cross_entropy_with_logits(model.head(pooled).squeeze(1), target)
    loss = seg + spec["whole_seg_weight"] * seg_whole + spec["head_weight"] * head
    optim.zero_grad()
    loss.backward()
    optim.step()
    parts = {"seg": seg.item(), "seg_whole": seg_whole.item(), "head": head.item()}
    return {"loss": loss.item(), **parts}


@torch.no_grad()
def predict_with_scores(model: WithImageScore, inputs: np.ndarray, batch: int = 8) -> tuple:
    """Softmax maps (C,H,W) and image scores for inputs (N,C,H,W), in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    probs, scores = [], []
    for i in range(0, len(inputs), batch):
        logits, score = model(torch.from_numpy(inputs[i : i + batch]).to(device))
        probs += list(torch.softmax(logits, 1).cpu().numpy())
        scores += score.cpu().tolist()
    return probs, scores


def gated_summary(
    probs: list, masks: list, scores: list, max_regions: int, max_free_rate: float
) -> dict:
    """Ungated Dice, AUROC, and the lowest gate keeping masks on <= `max_free_rate` of the
    defect-free tiles with the Dice (mean over defect tiles) and free-mask rate at that gate."""
    has = np.array([m.any() for m in masks])
    preds = served_masks(probs, max_regions)
    fired = np.array([p.any() for p in preds])
    dice = np.array(
        [
            dice_iou(p > 0, m > 0)[0] if h else np.nan
            for p, m, h in zip(preds, masks, has, strict=True)
        ]
    )
    s = np.asarray(scores)
    best = None
    for gate in sorted({0.0, *s.tolist()}):
        keep = s >= gate
        free_rate = float(np.mean((fired & keep)[~has]))
        if free_rate <= max_free_rate:
            best = (gate, float(np.mean(np.where(keep[has], dice[has], 0.0))), free_rate)
            break
    gate, gated, free_rate = best if best else (1.0, 0.0, 0.0)
    return {
        "dice_ungated": float(np.nanmean(dice)),
        "free_rate_ungated": float(np.mean(fired[~has])),
        "auroc": float(roc_auc_score(has, s)),
        "gate": float(gate),
        "dice_gated": gated,
        "free_rate_gated": free_rate,
    }


def _head_record(model: WithImageScore, recipe: Recipe, spec: dict) -> dict:
    """The image head as `vision.segment.image_head.with_image_score` reads it."""
    return {
        "weight": model.head.weight.detach().cpu().numpy().ravel().tolist(),
        "bias": float(model.head.bias.detach().cpu().item()),
        "layers": list(recipe.extra["image_head"]["layers"]),
        "trained": "jointly with the segmenter (stage 2 fine-tune, BCE on whole tiles)",
        "head_weight": spec["head_weight"],
    }


def _save(out: Path, model, optim, recipe: Recipe, progress: dict, spec: dict, best: bool) -> None:
    """last.pt (resume), best.pt (export: segmenter + `image_head`), history and curves."""
    seg = {k: v.detach().cpu() for k, v in model.features.model.state_dict().items()}
    common = {"model": seg, "recipe": recipe.to_dict(), "epoch": progress["epoch"]}
    head = _head_record(model, recipe, spec)
    if best:
        torch.save({**common, "image_head": head, "val": progress["history"][-1]}, out / "best.pt")
    full = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    resume = {"full": full, "optim": optim.state_dict(), "torch_rng": torch.get_rng_state()}
    torch.save({**common, **resume, **progress}, out / "last.pt")
    write_json({"recipe": recipe.to_dict(), "history": progress["history"]}, out / "history.json")
    plot_curves(progress["history"], out / "curves.png", title=f"{recipe.name} fine-tune")


def _optimiser(model: WithImageScore, spec: dict, weight_decay: float) -> torch.optim.Optimizer:
    groups = [
        {"params": list(model.features.parameters()), "lr": spec["lr"], "base": spec["lr"]},
        {"params": list(model.head.parameters()), "lr": spec["head_lr"], "base": spec["head_lr"]},
    ]
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def _train_epoch(model, optim, loss_fn, data: Prepared, stage: Recipe, spec: dict, clock) -> dict:
    """One epoch of joint steps (`stage`: the recipe at its last phase, `clock()`: the fraction
    of the budget spent, by epochs or by time, whichever is further); the mean losses."""
    epoch, steps, size = int(spec["_epoch"]), stage.steps_per_epoch, stage.batch_size
    seed = stage.seed * 1000 + epoch
    crops = CropDataset(data, stage, steps * size, seed, (0, spec["_ratio"]), spec["_online"])
    rng = np.random.default_rng(seed + 500)
    losses = []
    _train_mode(model)
    for i in range(steps):
        items = [crops[i * size + j] for j in range(size)]
        batch = (torch.stack([a for a, _ in items]), torch.stack([b for _, b in items]))
        for group in optim.param_groups:
            group["lr"] = group["base"] * _lr_factor(clock(i / steps), epoch * steps + i)
        whole = _whole_batch(data, rng, int(spec["whole_per_step"]))
        losses.append(_step(model, optim, loss_fn, batch, whole, spec))
    return {k: float(np.mean([x[k] for x in losses])) for k in losses[0]}


def validate(model: WithImageScore, data: Prepared, recipe: Recipe, spec: dict) -> dict:
    """`gated_summary` of the validation tiles at input size, and the selection score
    0.5 * (gated Dice + AUROC)."""
    probs, scores = predict_with_scores(model, data.inputs)
    regions, rate = int(recipe.extra.get("max_regions", 0)), float(spec["max_free_rate"])
    summary = gated_summary(probs, list(data.labels), scores, regions, rate)
    return {"score": 0.5 * (summary["dice_gated"] + summary["auroc"]), **summary}


def _record(progress: dict, row: dict, metrics: dict | None) -> bool:
    """Append an epoch's row (with its `val_*` figures); True when it is the best so far."""
    improved = False
    if metrics:
        row |= {"score": metrics["score"], **{f"val_{k}": v for k, v in metrics.items()}}
        improved = metrics["score"] > progress["best"]
        progress["best"] = max(metrics["score"], progress["best"])
    row["elapsed_s"] = round(progress["elapsed"], 1)
    progress["history"].append(row)
    tqdm.write(
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
    )
    return improved


def _resumed(out: Path, model, optim, resume: bool) -> dict | None:
    """The progress saved in `out/last.pt` (model, optimiser and RNG restored), or None."""
    if not (resume and (out / "last.pt").is_file()):
        return None
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["full"])
    optim.load_state_dict(state["optim"])
    torch.set_rng_state(state["torch_rng"])
    return {k: state[k] for k in ("epoch", "elapsed", "best", "history")}


def finetune(
    recipe: Recipe, root: Path, out: Path, init: Path, resume: bool = False, make_online=None
) -> dict:
    """Fine-tune the served weights `init` of `recipe` on data under `root` into `out`
    (last.pt each epoch, best.pt on the best validation, history.json, curves.png); the
    served weights themselves are validated first (epoch 0), so best.pt beats them or is absent."""
    out.mkdir(parents=True, exist_ok=True)
    spec = _spec(recipe)
    seed_everything(recipe.seed)
    splits = load_splits(recipe, root, out)
    train_data, val_data = Prepared.of(splits["train"], recipe), Prepared.of(splits["val"], recipe)
    online, ratio = (None, 0.0)
    if recipe.extra.get("online_synth"):
        online, ratio = recipe_online(recipe, root, splits, make_online)
    stage = at_epoch(recipe, 10**9)[0]  # crops, loss weights: the recipe's last phase
    model = load_served(recipe, init).to(training_device())
    optim = _optimiser(model, spec, recipe.weight_decay)
    progress = _resumed(out, model, optim, resume)
    if progress is None:
        progress = {"epoch": 0, "elapsed": 0.0, "best": -1.0, "history": []}
        _record(progress, {"epoch": 0, "init": str(init)}, validate(model, val_data, recipe, spec))
    loss_fn = make_loss(stage)
    budget, epochs = float(spec["minutes"]) * 60, int(spec["epochs"])
    while progress["epoch"] < epochs and progress["elapsed"] < budget:
        start, epoch = time.monotonic(), progress["epoch"]
        spent = progress["elapsed"]

        def clock(part: float, epoch=epoch, spent=spent, start=start) -> float:
            return max((epoch + part) / epochs, (spent + time.monotonic() - start) / budget)

        run = {**spec, "_epoch": epoch, "_ratio": ratio, "_online": online}
        row = {
            "epoch": epoch + 1,
            **_train_epoch(model, optim, loss_fn, train_data, stage, run, clock),
        }
        progress["epoch"] += 1
        done = progress["epoch"] >= epochs or clock(1.0) >= 1.0
        due = done or progress["epoch"] % int(spec["val_every"]) == 0
        metrics = validate(model, val_data, recipe, spec) if due else None
        progress["elapsed"] += time.monotonic() - start
        _save(out, model, optim, recipe, progress, spec, _record(progress, row, metrics))
    return {
        "epochs": progress["epoch"],
        "elapsed_s": progress["elapsed"],
        "best_score": progress["best"],
    }
