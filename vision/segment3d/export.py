"""Export: best checkpoint -> ONNX (batch dynamic) -> parity gate -> weights -> repository entry
with config.yaml and the card (the CC BY-SA 4.0 attribution of the training data included)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vision.config import load_config
from vision.errors import ConfigError
from vision.export import export_onnx, parity_check, read_card, write_repository_entry
from vision.segment3d.data import centre_offsets, load_case, place
from vision.segment3d.ensemble import SoftmaxMean
from vision.segment3d.recipe import Recipe3D, build_unet, model_config
from vision.weights import WEIGHTS_FILE, load_weights, save_weights
from vision.weights import build_network as network_of_card

OPSET = 17
DESCRIPTION = (
    "Hippocampus segmentation in T1-weighted brain MR crops (MSD Task04): 3D U-Net, "
    "labels anterior / posterior, 1 mm isotropic, sliding window with Gaussian blending."
)
LICENCE = {
    "dataset": "Medical Segmentation Decathlon, Task04_Hippocampus "
    "(Vanderbilt University Medical Center)",
    "licence": "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)",
    "attribution": "Trained on the Medical Segmentation Decathlon Task04_Hippocampus data "
    "(Vanderbilt University Medical Center), CC BY-SA 4.0; this model, derived from it, is "
    "redistributed under the same licence with this attribution.",
    "citation": [
        "Simpson et al., 'A large annotated medical image dataset for the development and "
        "evaluation of segmentation algorithms', arXiv:1902.09063 (2019)",
        "Antonelli et al., 'The Medical Segmentation Decathlon', Nature Communications "
        "13:4128 (2022)",
    ],
}
LIMITATIONS = [
    "Trained and tested on a development subset of the 186 labelled MSD cases (split fixed, "
    "seeded, recorded in splits.json); the decathlon's hidden test set was not used.",
    "Cases are left and right crops without a subject id: both sides of one subject may fall "
    "on different sides of the split, so the test figures may be optimistic.",
    "Input: a small MR crop around one hippocampus at 1 mm (whole-brain volumes are windowed "
    "but were never seen in training); intensities are z-scored over nonzero voxels.",
    "Research use; not a medical device.",
]


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, Recipe3D, dict]:
    """The network of a checkpoint in eval mode, its recipe and the checkpoint itself."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    recipe = Recipe3D.from_dict(saved["recipe"])
    model = build_unet(recipe)
    model.load_state_dict(saved["model"])
    return model.eval(), recipe, saved


def load_members(paths: list[Path]) -> tuple[torch.nn.Module, Recipe3D, list[dict]]:
    """One checkpoint's network, or the softmax mean of several (members trained with the same
    recipe but their seed): the network in eval mode, the served recipe, each checkpoint."""
    loaded = [load_checkpoint(p) for p in paths]
    if len(loaded) == 1:
        return loaded[0][0], loaded[0][1], [loaded[0][2]]
    recipes = [dataclasses.replace(r, seed=0, ensemble_seeds=()) for _, r, _ in loaded]
    if any(r != recipes[0] for r in recipes):
        raise ConfigError("ensemble members were trained with different recipes")
    seeds = tuple(r.seed for _, r, _ in loaded)
    # `seed` of an ensemble recipe makes the split when there is no split file; members: theirs
    recipe = dataclasses.replace(recipes[0], ensemble_seeds=seeds)
    model = SoftmaxMean([m for m, _, _ in loaded])
    return model.eval(), recipe, [s for _, _, s in loaded]


def parity_batches(root: Path, names: list[str], recipe: Recipe3D) -> list[np.ndarray]:
    """Real validation volumes placed in the canvas: a batch of 1 and one of up to 3."""
    arrays = []
    for name in names[:4]:
        case = load_case(root, name)
        arrays.append(
            place(case.image, recipe.canvas, centre_offsets(case.image.shape, recipe.canvas))[None]
        )
    return [np.stack(arrays[:1]), np.stack(arrays[1:4] or arrays[:1])]


def _gate(report: dict, tolerance: float, what: str) -> dict:
    """Pass when the probabilities agree within `tolerance`. The logits are not gated: an
    ensemble's are log(mean softmax), large and negative where a class is unlikely: for the
    bundled hippocampus pair they differ by 9.7e-5 between torch and ONNX Runtime (a 1e-4 gate
    on them would fail by chance on a re-export) where the probabilities differ by 1.4e-5."""
    worst = report["max_abs_probability_diff"]
    passed = bool(worst <= tolerance)
    if not passed:
        raise ConfigError(f"{what}: max abs probability difference {worst:.2e} > {tolerance:.0e}")
    return {
        **report,
        "tolerance": tolerance,
        "gated": "max_abs_probability_diff",
        "passed": passed,
        "volumes": sum(report["batch_sizes"]),
    }


def _training(states: list[dict]) -> dict[str, Any]:
    """The card's training record: one network's, or each member's with the ensemble rule."""
    rows = [_member_training(s["state"]) for s in states]
    common = {
        "selection": "best mean validation Dice (validation split only)",
        "loss": "DiceCE (MONAI)",
        "optimiser": "AdamW, cosine",
    }
    if len(rows) == 1:
        return {**rows[0], **common, "threads": 2}
    return {
        **common,
        "members": [
            {"seed": s["recipe"]["seed"], **row} for s, row in zip(states, rows, strict=True)
        ],
        "threads": "1 per member, members trained concurrently",
        "ensemble": "mean of the members' softmax (each member's best validation epoch)",
    }


def _member_training(state: dict) -> dict[str, Any]:
    return {
        "epochs_run": state["epoch"],
        "steps": state["steps"],
        "best_epoch": state["best_epoch"],
        "best_val_dice_mean": round(state["best"], 4),
        "minutes": round(state["elapsed_s"] / 60, 1),
    }


def _architecture(recipe: Recipe3D) -> str:
    unet = (
        f"MONAI UNet (3D, channels {_dashed(recipe.channels)}, strides "
        f"{_dashed(recipe.strides)}, {recipe.num_res_units} residual units, {recipe.norm} norm)"
    )
    if len(recipe.ensemble_seeds) > 1:
        return f"mean of the softmax of {len(recipe.ensemble_seeds)} networks, each a {unet}"
    return unet


def _card(recipe: Recipe3D, states: list[dict], splits_path: Path, parity: dict) -> dict[str, Any]:
    split_counts = {k: len(v) for k, v in _splits(splits_path).items()}
    return {
        "name": recipe.name,
        "task": "volumetric_segmentation",
        "description": DESCRIPTION,
        "labels": list(recipe.labels),
        "architecture": _architecture(recipe),
        "intended_use": "Research: hippocampus volumetry on 1 mm T1 MR crops.",
        "data": {
            **LICENCE,
            "split_file": "splits.json",
            "split_counts": split_counts,
            "split_seed": json.loads(splits_path.read_text())["seed"],
            "labels_file": "labelsTr: 0 background, 1 anterior, 2 posterior",
        },
        "recipe": recipe.to_dict(),
        "training": _training(states),
        "export": {
            "opset": OPSET,
            "input": f"images [N, 1, {_shape(recipe)}] float32 (N dynamic)",
            "output": f"logits [N, 3, {_shape(recipe)}]",
            "parity": parity,
        },
        "limitations": LIMITATIONS,
    }


def _splits(path: Path) -> dict[str, list[str]]:
    return json.loads(path.read_text())["splits"]


def export(
    checkpoints: Path | list[Path],
    repo: Path,
    root: Path,
    splits_path: Path,
    run: Path,
    tolerance: float = 1e-4,
) -> Path:
    """Export a checkpoint (or the softmax mean of several, an ensemble) into `repo/<name>/`;
    the model folder."""
    paths = [checkpoints] if isinstance(checkpoints, Path) else list(checkpoints)
    model, recipe, saved = load_members(paths)
    run.mkdir(parents=True, exist_ok=True)
    onnx_path = run / "model.onnx"
    example = torch.zeros((1, 1, *recipe.canvas))
    export_onnx(model, example, onnx_path, ("images",), ("logits",), OPSET, dynamic_batch=True)
    batches = parity_batches(root, _splits(splits_path)["val"], recipe)
    parity = _gate(
        parity_check(model, onnx_path, batches, softmax_axis=1), tolerance, "export parity"
    )
    config = model_config(recipe, DESCRIPTION)
    states = [_run_state(p.parent, one) for p, one in zip(paths, saved, strict=True)]
    card = _card(recipe, states, splits_path, parity)
    model_dir = write_repository_entry(repo, config, onnx_path, card)
    load_config(model_dir)  # the written config must parse as the server reads it
    if splits_path.resolve() != (model_dir / "splits.json").resolve():
        shutil.copyfile(splits_path, model_dir / "splits.json")
    runs = [run] if len(paths) == 1 else [p.parent for p in paths]
    return _ship_weights(model, model_dir, batches, tolerance, runs)


def _ship_weights(
    model: Any, model_dir: Path, batches: list, tolerance: float, runs: list[Path]
) -> Path:
    """Save the weights, reload them into a fresh network and gate it against the ONNX file."""
    entry = save_weights(model, model_dir / "1" / WEIGHTS_FILE, {"format": "pt"})
    card = read_card(model_dir)
    fresh = load_weights(network_of_card(card), model_dir / "1" / WEIGHTS_FILE)
    parity = _gate(
        parity_check(fresh, model_dir / "1" / "model.onnx", batches, softmax_axis=1),
        tolerance,
        "shipped weights parity",
    )
    card["files"] = sorted(
        {*card.get("files", []), "splits.json", *_copy_run_files(runs, model_dir)}
    )
    card["weights"] = {
        **entry,
        "file": f"1/{WEIGHTS_FILE}",
        "format": "safetensors (fp32)",
        "provenance": "the training checkpoint's state dict (best validation "
        "epoch), saved at export",
        "parity": parity,
    }
    from vision.export import write_card

    write_card(model_dir, card)
    return model_dir


def _shape(recipe: Recipe3D) -> str:
    return ", ".join(str(v) for v in recipe.canvas)


def _dashed(values: tuple[int, ...]) -> str:
    return "-".join(str(v) for v in values)


def _copy_run_files(runs: list[Path], model_dir: Path) -> list[str]:
    """The training curve and log of each run beside the model (an ensemble member's named
    after its run folder, e.g. `training_log_seed1.json`); the names copied."""
    copied = []
    for run in runs:
        tag = f"_{run.name}" if len(runs) > 1 else ""
        for src, dst in (("curve.png", "training_curves"), ("log.json", "training_log")):
            name = f"{dst}{tag}{Path(src).suffix}"
            if (run / src).is_file():
                shutil.copyfile(run / src, model_dir / name)
                copied.append(name)
    return copied


def _run_state(run: Path, best: dict) -> dict:
    """The run's totals (from `last.pt` when present) with the best checkpoint's epoch."""
    last = run / "last.pt"
    if not last.is_file():
        return best
    state = torch.load(last, map_location="cpu", weights_only=False)["state"]
    state |= {"best": best["state"]["best"], "best_epoch": best["state"]["epoch"]}
    return {"state": state, "recipe": best["recipe"]}
