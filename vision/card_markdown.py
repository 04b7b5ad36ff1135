"""The readable parts of `MODEL_CARD.md` that a stranger reads first: every figure with its n
and 95 % interval, the metric definitions, and how (and how often) the figures were made.

A figure is a dict with `ci95` and `value` (or `mean`), as `vision.stats` and
`vision.detect.intervals` make them; a number beside a `<name>_ci` figure is that figure; a
number with no interval is listed as such, so that a missing interval shows. Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

_EXTRAS = ("instances", "k", "threshold")
_SKIP = ("definitions", "intervals")


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def _is_figure(value: Any) -> bool:
    return isinstance(value, dict) and "ci95" in value and ("value" in value or "mean" in value)


def _walk(values: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(name, figure or bare number) of every figure under `values`, depth first."""
    rows: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key in _SKIP:
            continue
        if _is_figure(value):
            rows.append((name.removesuffix("_ci"), value))
        elif isinstance(value, dict):
            rows += _walk(value, f"{name}.")
        elif isinstance(value, float) and f"{key}_ci" not in values:
            rows.append((name, value))
    return rows


def _row(name: str, value: Any) -> str:
    if not isinstance(value, dict):
        return f"| {name} | {_fmt(value)} | no interval | |"
    point = value.get("value", value.get("mean"))
    low, high = value["ci95"]
    extra = ", ".join(f"{k} {_fmt(value[k])}" for k in _EXTRAS if k in value)
    n = f"{value.get('n', '')}" + (f" ({extra})" if extra else "")
    return f"| {name} | {_fmt(point)} | {_fmt(low)} – {_fmt(high)} | {n} |"


def figure_lines(metrics: dict) -> list[str]:
    """`## Figures`: one table per split, each figure with its value, 95 % interval and n."""
    lines: list[str] = []
    for split, values in metrics.items():
        rows = _walk(values) if isinstance(values, dict) else []
        if not rows:
            continue
        lines += [f"### {split} split", "", "| figure | value | 95 % interval | n |"]
        lines += ["|---|---|---|---|", *(_row(name, value) for name, value in rows), ""]
    return ["## Figures", "", *lines] if lines else []


def definition_lines(metrics: dict, evaluation: dict) -> list[str]:
    """`## Metric definitions`, from the evaluation and from each split's metrics."""
    found: dict[str, str] = dict(evaluation.get("definitions", {}))
    for values in metrics.values():
        if isinstance(values, dict):
            found.update(values.get("definitions", {}))
    if not found:
        return []
    return ["## Metric definitions", "", *(f"- `{k}`: {v}" for k, v in found.items()), ""]


def protocol_lines(evaluation: dict, limitations: list[str]) -> list[str]:
    """`## Evaluation protocol`: the commit that made the model, every run that produced
    figures (split, images, commit, time, model file) and whether test was scored twice."""
    made = evaluation.get("model_commit")
    runs = evaluation.get("runs", [])
    if not made and not runs:
        return []
    lines = ["## Evaluation protocol", ""]
    if made:
        commit = made.get("commit") or "none (the file is not committed)"
        dirty = " (the file has uncommitted changes)" if made.get("uncommitted_changes") else ""
        lines += [f"Model `{made['file']}` made by commit `{commit}`{dirty}: {made['rule']}.", ""]
    if runs:
        lines += ["| split | images | code commit | UTC | model sha256 | note |"]
        lines += ["|---|---|---|---|---|---|"]
        for run in runs:
            sha = (run.get("model_sha256") or "")[:12]
            code = (run.get("commit") or "")[:12]
            if run.get("uncommitted_code"):
                code += f" + {len(run['uncommitted_code'])} uncommitted vision files"
            cells = [run["split"], run["images"], code, run["utc"]]
            lines.append(f"| {' | '.join(map(str, cells))} | {sha} | {run.get('note', '')} |")
        lines.append("")
    tests = sum(run["split"] == "test" for run in runs)
    said = [x for x in limitations if x.lower().startswith("the test figures were produced")]
    lines += said or ([f"The test split was scored {tests} time(s)."] if runs else [])
    return [*lines, ""]
