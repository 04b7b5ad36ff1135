"""Task-agnostic export helpers: torch -> ONNX, parity check, repository entry and card.

INT8 quantisation is `vision.quantize`; the TensorRT gate is `vision.tensorrt`.

Torch is imported lazily so that the repository-writing helpers work in a torch-free install.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from vision.config import ModelConfig, write_config
from vision.runtime import OnnxModel

log = logging.getLogger(__name__)


def export_onnx(
    model: Any,
    example: Any,
    path: str | Path,
    input_names: Sequence[str] = ("images",),
    output_names: Sequence[str] = ("logits",),
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export `model` (eval mode) with one example input to ONNX, then run onnx.checker.

    Uses the dynamo exporter (batch dimension dynamic when `dynamic_batch`), falling back to
    the TorchScript exporter if dynamo fails. The file is self-contained (no external data).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    try:
        shapes = None
        if dynamic_batch:
            shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},)
        program = torch.onnx.export(
            model,
            (example,),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
        )
        program.save(str(path), external_data=False)
    except Exception as exc:  # noqa: BLE001 - fall back to the TorchScript exporter
        log.warning("dynamo export failed (%s); using the TorchScript exporter", exc)
        axes = {n: {0: "batch"} for n in (*input_names, *output_names)} if dynamic_batch else None
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_axes=axes,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return path


def parity_check(
    torch_model: Any,
    onnx_path: str | Path,
    batches: list[np.ndarray],
    softmax_axis: int | None = None,
) -> dict:
    """Run each batch through torch and ONNX Runtime (CPU); per-output max abs difference, and
    with `softmax_axis` also the largest difference of the outputs' softmax over that axis
    (`max_abs_probability_diff`: what a segmenter serves, where its logits are large)."""
    import torch

    session = OnnxModel(onnx_path)
    input_name = session.inputs[0].name
    worst: dict[str, float] = {name: 0.0 for name in session.output_names}
    worst_probability = 0.0
    torch_model = torch_model.eval()
    for batch in batches:
        with torch.no_grad():
            expected = torch_model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        got = session.run({input_name: np.ascontiguousarray(batch, np.float32)})
        for name, want in zip(session.output_names, expected, strict=True):
            diff = float(np.max(np.abs(got[name] - want.numpy())))
            worst[name] = max(worst[name], diff)
            if softmax_axis is not None:
                worst_probability = max(
                    worst_probability, _probability_diff(got[name], want.numpy(), softmax_axis)
                )
    report = {
        "max_abs_diff": worst,
        "batches": len(batches),
        "batch_sizes": [int(b.shape[0]) for b in batches],
    }
    if softmax_axis is not None:
        report["max_abs_probability_diff"] = worst_probability
    return report


def _probability_diff(got: np.ndarray, want: np.ndarray, axis: int) -> float:
    from scipy.special import softmax

    a, b = softmax(got.astype(np.float64), axis), softmax(want.astype(np.float64), axis)
    return float(np.max(np.abs(a - b)))


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_card(model_dir: str | Path, card: dict) -> Path:
    """Write `card.json` and its readable twin `MODEL_CARD.md` into a model folder, in the
    `vision.model_card` schema (older layouts are migrated; an invalid card raises CardError)."""
    from vision.model_card import ModelCard, migrate, write_model_card

    return write_model_card(model_dir, ModelCard.from_dict(migrate(card)))


def read_card(model_dir: str | Path) -> dict:
    """The model folder's `card.json` (empty when absent)."""
    path = Path(model_dir) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def store_optimised(model_file: Path) -> Path | None:
    """The stored optimised graph beside `model_file` (`vision.optimised`, parity-checked), so
    that the server does not optimise it on every start; None (logged) when the parity gate
    refuses it: the server then optimises at load, as it always could."""
    from vision.errors import ConfigError
    from vision.optimised import write_optimised

    try:
        return write_optimised(model_file)
    except ConfigError as exc:
        log.warning("%s", exc)
        return None


def _keep_evaluation_runs(card: dict, runs: list[dict]) -> dict:
    """`card` with the folder's earlier evaluation runs kept: a re-export over a model folder
    does not forget that its test split was scored before (each run names its model's sha256),
    and the card still says so when it was scored more than once."""
    from vision.model_card import restate_repeated_test

    card["evaluation"] = {**card.get("evaluation", {}), "runs": list(runs)}
    return restate_repeated_test(card)


def write_repository_entry(
    repo: Path, config: ModelConfig, onnx_path: Path, card: dict, version: int = 1
) -> Path:
    """Copy the model into `repo/<name>/<version>/<model_file>` with its stored optimised graph
    (`store_optimised`), write config.yaml and the card.

    The card gains `name`, `versions[version]` (sha256, size, date) and keeps earlier versions'
    entries and the folder's earlier evaluation runs. Returns the model folder.
    """
    model_dir = Path(repo) / config.name
    earlier_runs = read_card(model_dir).get("evaluation", {}).get("runs", [])
    target = model_dir / str(version) / config.model_file
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(onnx_path).resolve() != target.resolve():
        shutil.copyfile(onnx_path, target)
    store_optimised(target)
    write_config(config, model_dir)
    merged = {**read_card(model_dir), **card}
    versions = dict(merged.get("versions", {}))
    versions[str(version)] = {
        **versions.get(str(version), {}),
        **card.get("versions", {}).get(str(version), {}),
        "file": f"{version}/{config.model_file}",
        "sha256": sha256(target),
        "bytes": target.stat().st_size,
        "exported_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    merged = {"name": config.name, **merged, "versions": versions}
    if earlier_runs and "runs" not in merged.get("evaluation", {}):
        merged = _keep_evaluation_runs(merged, earlier_runs)
    merged.setdefault("task", config.task)
    merged.setdefault("labels", list(config.labels))
    merged.setdefault("description", config.description)
    write_card(model_dir, merged)
    return model_dir
