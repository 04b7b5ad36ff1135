"""Choose the served test-time mirroring on the validation split only.

Each candidate set of flips (none, each axis alone, the three axes one at a time, and all seven
axis combinations as nnU-Net mirrors) is scored through the served ONNX path
(`vision.segment3d.evaluate.evaluate` on the `val` split, nothing recorded in the card); the
winner is the one with the best mean validation Dice (the rule that picked the training
checkpoint), the smaller candidate on a tie. The test split is never read here.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

from vision.config import load_config, write_config
from vision.model_card import ModelCard, write_model_card
from vision.reports import write_json
from vision.segment3d.evaluate import evaluate

CANDIDATES: dict[str, list[list[int]]] = {
    "none": [],
    "z": [[0]],
    "y": [[1]],
    "x": [[2]],
    "z,y,x": [[0], [1], [2]],
    "all 7 (nnU-Net)": [list(c) for n in (1, 2, 3) for c in itertools.combinations(range(3), n)],
}


def select(
    model_dir: Path, root: Path, splits: Path, out: Path, limit_cases: int = 0
) -> dict[str, Any]:
    """Score every candidate on `val`; the report (written to `out/tta-val.json`) names the
    winner and each candidate's per-label validation Dice with n and bootstrap intervals."""
    if "val" not in json.loads(splits.read_text())["splits"]:
        raise ValueError(f"{splits}: no val split to choose test-time mirroring on")
    rows: dict[str, Any] = {}
    for name, flips in CANDIDATES.items():
        report = evaluate(
            model_dir, root, splits, "val", out / "tta" / _slug(name), limit_cases, False, flips
        )
        rows[name] = {
            "tta_flips": flips,
            "passes": len(flips) + 1,
            "summary": report["summary"],
            "intervals": {k: v for k, v in report["metrics"].items() if k.startswith("dice")},
            "seconds": report["seconds"],
        }
    best = max(rows, key=lambda k: (rows[k]["summary"]["dice_mean"], -rows[k]["passes"]))
    result = {
        "model": model_dir.name,
        "split": "val",
        "n": rows[best]["intervals"]["dice_mean"]["n"],
        "rule": "best mean validation Dice; fewer passes on a tie; test split not used",
        "chosen": best,
        "tta_flips": rows[best]["tta_flips"],
        "candidates": rows,
    }
    write_json(result, out / "tta-val.json")
    return result


def apply(model_dir: Path, result: dict[str, Any]) -> None:
    """Serve `result`'s choice: the config's `volume.tta_flips`, the report as the model's
    `tta-val.json` and the card's `evaluation.tta_selection` (each candidate's val Dice)."""
    config = load_config(model_dir)
    flips = tuple(tuple(int(a) for a in f) for f in result["tta_flips"])
    volume = dataclasses.replace(config.volume, tta_flips=flips)
    write_config(dataclasses.replace(config, volume=volume), model_dir)
    load_config(model_dir)  # the written config must parse as the server reads it
    write_json(result, model_dir / "tta-val.json")
    card = json.loads((model_dir / "card.json").read_text())
    rows = result["candidates"]
    card.setdefault("evaluation", {})["tta_selection"] = {
        "split": result["split"],
        "n": result["n"],
        "rule": result["rule"],
        "chosen": result["chosen"],
        "tta_flips": result["tta_flips"],
        "val_dice_mean": {k: v["summary"]["dice_mean"] for k, v in rows.items()},
        "val_dice_posterior": {k: v["summary"].get("dice_posterior") for k, v in rows.items()},
        "report": "tta-val.json",
    }
    card["files"] = sorted({*card.get("files", []), "tta-val.json"})
    write_model_card(model_dir, ModelCard.from_dict(card))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")
