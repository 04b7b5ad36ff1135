"""Training: whole volumes in a fixed canvas, Dice+CE, AdamW with a cosine schedule over a
wall-clock budget, validation Dice each epoch (model selection on validation only), resumable
checkpoints, a JSON log and a PNG curve."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader
from tqdm import tqdm

from vision.reports import plot_curves, write_json
from vision.segment3d.data import Case, fixed_split, load_case
from vision.segment3d.dataset import VolumeDataset
from vision.segment3d.recipe import Recipe3D, build_unet

WARMUP_FRACTION = 0.03


@dataclass
class State:
    """What a checkpoint holds besides the weights and the optimiser."""

    epoch: int = 0
    steps: int = 0
    elapsed_s: float = 0.0
    best: float = -1.0
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)


def load_cases(root: Path, names: list[str]) -> list[Case]:
    """Read and normalise the named cases."""
    return [load_case(root, n) for n in tqdm(names, desc="reading", leave=False)]


def dice_per_label(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> list[float]:
    """Dice of each foreground label (1 when both are empty)."""
    out = []
    for label in range(1, n_labels):
        p, t = pred == label, truth == label
        total = int(p.sum() + t.sum())
        out.append(1.0 if total == 0 else 2.0 * int((p & t).sum()) / total)
    return out


def predict_case(model: torch.nn.Module, case: Case, recipe: Recipe3D) -> np.ndarray:
    """Argmax labels of one case: MONAI's sliding window (overlap 0.5, Gaussian), as served."""
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(case.image[None, None]),
            recipe.canvas,
            4,
            model,
            overlap=0.5,
            mode="gaussian",
        )
    return logits.argmax(1)[0].numpy()


def validate(model: torch.nn.Module, cases: list[Case], recipe: Recipe3D) -> dict[str, float]:
    """Mean Dice per label over `cases` (the validation split)."""
    model.eval()
    scores = np.array(
        [
            dice_per_label(predict_case(model, c, recipe), c.labels, len(recipe.labels))
            for c in cases
        ]
    )
    out = {
        f"val_dice_{n}": float(v) for n, v in zip(recipe.labels[1:], scores.mean(0), strict=True)
    }
    out["val_dice_mean"] = float(scores.mean())
    return out


def learning_rate(recipe: Recipe3D, fraction: float) -> float:
    """Linear warm-up, then cosine decay to 1 % over the budget (`fraction` of it elapsed)."""
    if fraction < WARMUP_FRACTION:
        return recipe.lr * max(fraction / WARMUP_FRACTION, 0.05)
    f = min((fraction - WARMUP_FRACTION) / (1 - WARMUP_FRACTION), 1.0)
    return recipe.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * f)))


def _checkpoint(path: Path, model: Any, optimiser: Any, state: State, recipe: Recipe3D) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "state": state.__dict__,
            "recipe": recipe.to_dict(),
        },
        tmp,
    )
    tmp.replace(path)


def _resume(out: Path, model: Any, optimiser: Any) -> State:
    path = out / "last.pt"
    if not path.is_file():
        return State()
    saved = torch.load(path, weights_only=False)
    model.load_state_dict(saved["model"])
    optimiser.load_state_dict(saved["optimiser"])
    return State(**saved["state"])


def train(
    recipe: Recipe3D,
    root: Path,
    out: Path,
    splits_path: Path,
    resume: bool = False,
    max_steps: int = 0,
    limit_cases: int = 0,
) -> dict[str, Any]:
    """Train `recipe` into `out` (last.pt, best.pt, log.json, curve.png); a summary dict."""
    recipe = dataclasses.replace(recipe, ensemble_seeds=())  # one network, seeded `seed`
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    splits = fixed_split(root, splits_path, recipe.split, recipe.seed)
    train_names, val_names = splits["train"], splits["val"]
    if limit_cases:
        train_names, val_names = train_names[:limit_cases], val_names[: max(1, limit_cases // 2)]
    train_cases, val_cases = load_cases(root, train_names), load_cases(root, val_names)
    model = build_unet(recipe)
    optimiser = torch.optim.AdamW(model.parameters(), recipe.lr, weight_decay=recipe.weight_decay)
    state = _resume(out, model, optimiser) if resume else State()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    budget = recipe.minutes * 60.0
    t0 = time.monotonic() - state.elapsed_s
    while state.elapsed_s < budget and not (max_steps and state.steps >= max_steps):
        row = _epoch(model, optimiser, loss_fn, train_cases, recipe, state, (t0, budget), max_steps)
        if state.epoch % recipe.val_every == 0 or state.elapsed_s >= budget:
            row |= validate(model, val_cases, recipe)
            state.elapsed_s = time.monotonic() - t0
            row["elapsed_min"] = state.elapsed_s / 60
            if row["val_dice_mean"] > state.best:
                state.best, state.best_epoch = row["val_dice_mean"], state.epoch
                _checkpoint(out / "best.pt", model, optimiser, state, recipe)
        state.history.append(row)
        _checkpoint(out / "last.pt", model, optimiser, state, recipe)
        write_json(
            {"recipe": recipe.to_dict(), "splits": str(splits_path), **state.__dict__},
            out / "log.json",
        )
        plot_curves(state.history, out / "curve.png", title=f"{recipe.name} (val = validation)")
    return {
        "epochs": state.epoch,
        "steps": state.steps,
        "minutes": state.elapsed_s / 60,
        "best_val_dice_mean": state.best,
        "best_epoch": state.best_epoch,
    }


def _epoch(
    model: Any,
    optimiser: Any,
    loss_fn: Any,
    cases: list[Case],
    recipe: Recipe3D,
    state: State,
    clock: tuple[float, float],
    max_steps: int,
) -> dict[str, Any]:
    """One pass over the training cases (stops early at the budget); the epoch's log row."""
    model.train()
    dataset = VolumeDataset(cases, recipe, augment=True, seed=recipe.seed * 10007 + state.epoch)
    loader = DataLoader(
        dataset,
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(recipe.seed + state.epoch),
    )
    (start, budget), losses = clock, []
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}", leave=False)
    for image, labels in bar:
        lr = learning_rate(recipe, state.elapsed_s / budget)
        for group in optimiser.param_groups:
            group["lr"] = lr
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(image), labels)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        state.steps += 1
        state.elapsed_s = time.monotonic() - start
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{lr:.1e}")
        if state.elapsed_s >= budget or (max_steps and state.steps >= max_steps):
            break
    state.epoch += 1
    return {
        "epoch": state.epoch,
        "steps": state.steps,
        "loss": float(np.mean(losses)),
        "lr": lr,
        "elapsed_min": state.elapsed_s / 60,
    }


def train_members(
    recipe: Recipe3D,
    root: Path,
    out: Path,
    splits_path: Path,
    threads: int,
    resume: bool = False,
    max_steps: int = 0,
    limit_cases: int = 0,
) -> dict[str, Any]:
    """Train an ensemble recipe's members concurrently, one process per seed, each into
    `out/seed<k>/` with its share of `threads` and the recipe's whole budget; their summaries.

    The split is made (or read) once before the members start, so every member uses the same.
    """
    import multiprocessing

    fixed_split(root, splits_path, recipe.split, recipe.seed)
    per_member = max(1, threads // len(recipe.ensemble_seeds))
    jobs = [
        (
            per_member,
            dataclasses.replace(recipe, seed=seed),  # `train` trains it as one network
            root,
            out / f"seed{seed}",
            splits_path,
            resume,
            max_steps,
            limit_cases,
        )
        for seed in recipe.ensemble_seeds
    ]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        summaries = pool.starmap(_train_member, jobs)
    return {f"seed{s}": row for s, row in zip(recipe.ensemble_seeds, summaries, strict=True)}


def _train_member(threads: int, *train_args: Any) -> dict[str, Any]:
    """A member's process: its share of the threads, then `train(*train_args)`."""
    torch.set_num_threads(threads)
    return train(*train_args)
