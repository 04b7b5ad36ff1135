"""The explanation-evaluation section of a model card (`vision xai-eval --update-card`).

`card_section` condenses an `xai_eval.json` report into `evaluation.xai`: every figure with its n
(and a 95 % interval where one is computed), per class, and the randomisation verdict.
`limitation` says, when the randomisation check fails, that it does and why; `update_card`
writes both into the card through `vision.export.write_card`, touching nothing else.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from vision.paths import PROJECT_ROOT

SECTION = "xai"
LIMITATION_PREFIX = "Explanations (vision xai-eval):"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def _faith(part: dict) -> dict:
    keys = ("n", "gradcam_auc", "gradcam_auc_ci95", "random_auc", "targets_beating_random")
    return {k: part.get(k) for k in keys}


def _pointing(part: dict) -> dict:
    keys = ("n", "hits", "gradcam_hit_rate", "gradcam_hit_rate_ci95", "random_hit_rate")
    return {**{k: part.get(k) for k in keys}, "tolerance_px": part.get("tolerance_px")}


def _randomisation(rand: dict) -> dict:
    if "steps" not in rand:
        return {"skipped": rand.get("skipped", "not run")}
    first, verdict = rand["steps"][0], rand["verdict"]
    top = {
        k: first.get(k)
        for k in ("spearman_mean", "abs_spearman_mean", "scored", "box_spearman_mean")
        if k in first
    }
    if "box_abs_spearman_mean" in first:
        top.update(
            box_abs_spearman_mean=first["box_abs_spearman_mean"], box_scored=first["box_scored"]
        )
    until = verdict["layers_until_goal"]
    return {
        "weights": _relative(rand.get("checkpoint")),
        "targets": rand["targets"],
        "layers": len(rand["layers"]),
        "top_layer": first["down_to"],
        "after_top_layer": top,
        "judged_on": verdict["judged_on"],
        "goal_abs_spearman_below": verdict["goal_abs_spearman_below"],
        "goal_met": verdict["goal_met"],
        "layers_until_goal": until,
        "goal_reached_at": None if until is None else rand["layers"][until - 1],
    }


def card_section(report: dict, command: str) -> dict:
    """`evaluation.xai` of a card from an `xai_eval.json` report."""
    return _round(
        {
            "command": command,
            "commit": _commit(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "split": report["split"],
            "images": report["images"],
            "targets": report["targets"],
            "method": report["method"],
            "target_layer": report["target_layer"],
            "deletion": _faith(report["deletion"]),
            "insertion": _faith(report["insertion"]),
            "pointing": _pointing(report["pointing"]),
            "per_class": {
                label: {
                    "targets": c["targets"],
                    "pointing": _pointing(c["pointing"]),
                    "deletion": _faith(c["deletion"]),
                    "insertion": _faith(c["insertion"]),
                }
                for label, c in report["per_class"].items()
            },
            "randomisation": _randomisation(report["randomisation"]),
            "definitions": DEFINITIONS,
        }
    )


DEFINITIONS = {
    "deletion": "area under the target score as the most salient pixels are replaced by the "
    "image mean (lower is better), vs random maps",
    "insertion": "area under the target score as the most salient pixels are put back into a "
    "blurred image (higher is better), vs random maps",
    "pointing": "the map's peak lies within tolerance_px of the truth (the matched truth box of "
    "a detection, the class mask of a segmenter); 95 % Wilson interval",
    "randomisation": "cascading model randomisation (Adebayo et al. 2018), output layer first: "
    "Spearman rho of trained vs randomised map; a detector is judged by |rho| inside the "
    "explained box (over the image reported too), a segmenter by |rho| over the image, so an "
    "inverted map is not counted as destroyed; passes when |rho| < 0.3 after the top layer",
}


def limitation(section: dict) -> str | None:
    """The card limitation when the randomisation check fails (None when it passes)."""
    rand = section["randomisation"]
    if "skipped" in rand:
        return f"{LIMITATION_PREFIX} the model-randomisation check did not run ({rand['skipped']})."
    if rand["goal_met"]:
        return None
    top = rand["after_top_layer"]
    where = (
        "inside the explained boxes" if rand["judged_on"].startswith("box") else "over the image"
    )
    value = top.get("box_abs_spearman_mean", top.get("abs_spearman_mean"))
    reached = (
        f"it falls below {rand['goal_abs_spearman_below']} only once {rand['layers_until_goal']} "
        f"of {rand['layers']} layers are randomised (down to {rand['goal_reached_at']})"
        if rand["layers_until_goal"]
        else f"it stays above {rand['goal_abs_spearman_below']} until every layer is randomised"
    )
    signed = top.get("box_spearman_mean", top.get("spearman_mean"))
    inverted = ""
    if signed is not None and signed < value - 0.1:
        which = "the maps are" if signed <= 0.1 - value else "some maps are"
        inverted = f" (signed mean {signed:.2f}: {which} inverted, not destroyed)"
    return (
        f"{LIMITATION_PREFIX} the heat maps fail the model-randomisation sanity check: with the "
        f"top layer ({rand['top_layer']}) randomised the map keeps |rho| = {value:.2f} {where}"
        f"{inverted} (n = {rand['targets']} targets), and {reached}. Why: the explained layer "
        f"({section['target_layer']}) lies below the randomised layers, so its activations are "
        f"unchanged and the map, gradient x activation, keeps the image structure they carry. "
        f"Read the maps as where the features the model sees are, not as proof of what decided "
        f"the finding."
    )


def update_card(model_dir: Path, report: dict, command: str) -> dict:
    """Write `evaluation.xai` and the randomisation limitation into the model's card."""
    from vision.export import read_card, write_card

    card = read_card(model_dir)
    section = card_section(report, command)
    card.setdefault("evaluation", {})[SECTION] = section
    kept = [x for x in card.get("limitations", []) if not x.startswith(LIMITATION_PREFIX)]
    note = limitation(section)
    card["limitations"] = kept + ([note] if note else [])
    write_card(model_dir, card)
    return section


def _relative(path: str | None) -> str | None:
    """A checkpoint path relative to the project (no machine-specific prefix in a card)."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return Path(path).name


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
