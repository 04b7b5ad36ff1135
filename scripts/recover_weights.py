"""One-off: recover each bundled model's torch weights from its ONNX file and ship them.

For every float model under models/: build the recipe's network (`vision.weights.build_network`),
fill it from `model.onnx`'s initializers (`vision.weights.state_from_onnx`), then gate it on real
test images: torch vs ONNX Runtime max |diff| on every output (plain graph), and the explain graph
vs the eager explain module (outputs and raw CAM). Only then write `1/weights.safetensors` and
the card's `weights` section; INT8 twins get a `weights` entry naming their float model's file
(no parity: their graph is a quantization of it). Every card is migrated to `vision.model_card`.

Run: .venv/bin/python scripts/recover_weights.py [--models NAME ...] [--check]
`--check` gates and reports without writing anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

from vision.config import load_config
from vision.io import decode_image
from vision.model_card import ModelCard, migrate, write_model_card
from vision.paths import PROJECT_ROOT, datasets_root
from vision.pipeline import Pipeline
from vision.runtime import OnnxModel
from vision.weights import WEIGHTS_FILE, build_network, load_weights, save_weights, state_from_onnx

MODELS = PROJECT_ROOT / "models"
ATOL = 1e-4  # every output, absolute
BOX_RTOL = 1e-6  # detector box rows are input pixels (up to 640): 1e-4 there is ~2 float32 ulps
_DRIVE = "drive/DRIVE/test/images"
_TILES = "magnetic-tile"
_BCCD = "bccd/BCCD/JPEGImages"
_PCB = "deeppcb/PCBData/group20085/20085"
IMAGES = {  # test-split images only
    "retina-vessels": [f"{_DRIVE}/0{i}_test.tif" for i in range(1, 5)],
    "tile-defects": [
        f"{_TILES}/MT_Blowhole/Imgs/exp1_num_322605.jpg",
        f"{_TILES}/MT_Break/Imgs/exp2_num_116961.jpg",
        f"{_TILES}/MT_Crack/Imgs/exp5_num_249786.jpg",
        f"{_TILES}/MT_Free/Imgs/exp1_num_10334.jpg",
    ],
    "blood-cells": [f"{_BCCD}/BloodImage_000{i}.jpg" for i in ("07", "11", "15", "16")],
    "pcb-defects": [f"{_PCB}/2008529{i}_test.jpg" for i in range(1, 5)],
}
INT8_TWINS = {"retina-vessels-int8": "retina-vessels", "blood-cells-int8": "blood-cells"}


def migrated(model_dir: Path) -> dict:
    """The folder's card in the current schema (task and labels from config.yaml when absent;
    a bare top-level sha256 of an older INT8 card becomes its version entry)."""
    card = migrate(json.loads((model_dir / "card.json").read_text()))
    config = load_config(model_dir)
    card.setdefault("task", config.task)
    card.setdefault("labels", list(config.labels))
    if "sha256" in card and not card.get("versions"):
        onnx_file = model_dir / "1" / config.model_file
        card["versions"] = {
            "1": {
                "file": f"1/{config.model_file}",
                "sha256": card.pop("sha256"),
                "bytes": onnx_file.stat().st_size,
            }
        }
    return card


def preprocessed(name: str, model_dir: Path) -> np.ndarray:
    """The model's test images after its own serving preprocessing, as one batch."""
    pipeline = Pipeline(load_config(model_dir))
    paths = [datasets_root() / p for p in IMAGES[name]]
    return np.stack([pipeline.preprocess(decode_image(p.read_bytes()))[0] for p in paths])


def recovered(card: dict, onnx_path: Path, channels: int) -> torch.nn.Module:
    """The card's network filled from the ONNX file's initializers (eval mode)."""
    model = build_network(card)
    state = state_from_onnx(model, onnx.load(str(onnx_path)), torch.zeros(1, channels, 64, 64))
    model.load_state_dict(state, strict=True)
    return model.eval()


def output_diffs(got: dict[str, np.ndarray], want: list[np.ndarray], task: str) -> dict:
    """Per-output max |diff|; a detector's output0 also split into score rows and box rows."""
    diffs = {}
    for (name, g), w in zip(got.items(), want, strict=True):
        diffs[name] = float(np.abs(g - w).max())
        if task == "detection":
            diffs[f"{name}.scores"] = float(np.abs(g[:, 4:] - w[:, 4:]).max())
            diffs[f"{name}.boxes"] = float(np.abs(g[:, :4] - w[:, :4]).max())
            diffs[f"{name}.boxes_abs_max"] = float(np.abs(w[:, :4]).max())
    return diffs


def plain_parity(model: torch.nn.Module, onnx_path: Path, batch: np.ndarray, task: str) -> dict:
    """Torch vs ONNX Runtime on the batch and on its first image alone."""
    session = OnnxModel(onnx_path)
    worst: dict[str, float] = {}
    for x in (batch, batch[:1]):
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        want = [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
        got = session.run({session.inputs[0].name: x})
        for key, value in output_diffs(got, want, task).items():
            worst[key] = max(worst.get(key, 0.0), value)
    return worst


def explain_parity(model: torch.nn.Module, model_dir: Path, batch: np.ndarray) -> dict:
    """The explain graph vs the eager explain module built on the recovered weights."""
    from vision.xai.explain_graph import build_explain_module, example_inputs
    from vision.xai.explain_graph import explain_parity as parity

    config = load_config(model_dir)
    explain = config.explain
    module = build_explain_module(model, explain.target_layer, config.task, explain.method)
    inputs = example_inputs(module, torch.from_numpy(batch[:2]))
    return parity(module, model_dir / "1" / explain.file, inputs)


def passed(plain: dict, explain: dict, task: str) -> bool:
    """Every output within ATOL (a detector's box rows: BOX_RTOL of their largest value, and its
    whole output0 no looser than that), in the plain and the explain graph; the raw CAM within
    the explain export's own relative tolerance."""
    from vision.xai.explain_graph import CAM_RTOL

    names = [k for k in plain if "." not in k]
    limit = {k: ATOL for k in names}
    if task == "detection":
        boxes = {k: BOX_RTOL * plain[f"{k}.boxes_abs_max"] for k in names}
        limit = {k: max(ATOL, boxes[k]) for k in names}
        limit |= {f"{k}.scores": ATOL for k in names} | {f"{k}.boxes": boxes[k] for k in names}
    ok = all(plain[k] <= v for k, v in limit.items())
    ok &= all(d <= limit[k] for k, d in explain["max_abs_diff"].items() if k != "cam")
    cam = explain["max_abs_diff"]["cam"]
    return ok and cam <= CAM_RTOL * explain["cam_abs_max"]


def weights_entry(saved: dict, plain: dict, explain: dict, images: int) -> dict:
    """The card's `weights` section for recovered weights."""
    worst = max(v for k, v in plain.items() if not k.endswith("_abs_max"))
    figure = f"Parity max |diff| = {worst:.3g} on {images} test images"
    boxes = [k for k in plain if k.endswith(".boxes")]
    if boxes:
        figure += " ({:.3g} on scores; {:.3g} on box coordinates of up to {:.0f} px)".format(
            max(plain[f"{k[:-6]}.scores"] for k in boxes),
            max(plain[k] for k in boxes),
            max(plain[f"{k}_abs_max"] for k in boxes),
        )
    return {
        "file": f"1/{saved['file']}",
        "sha256": saved["sha256"],
        "bytes": saved["bytes"],
        "format": "safetensors, float32, torch state_dict of the recipe's network as served",
        "provenance": "recovered from 1/model.onnx initializers by scripts/recover_weights.py "
        "(BatchNorm folded by the exporter: identity BatchNorm, folded shift as its bias); "
        f"not the training checkpoint. {figure}.",
        "parity": {
            "images": images,
            "max_abs_diff": plain,
            "explain_max_abs_diff": explain["max_abs_diff"],
            "explain_cam_abs_max": explain["cam_abs_max"],
            "explain_gradcam": explain.get("gradcam"),
            "tolerance": ATOL,
            "box_rtol": BOX_RTOL,
            "passed": True,
        },
    }


def recover_model(name: str, write: bool) -> dict | None:
    """Recover, gate and (with `write`) ship one model's weights; its report."""
    model_dir = MODELS / name
    card, config = migrated(model_dir), load_config(model_dir)
    onnx_path = model_dir / "1" / config.model_file
    batch = preprocessed(name, model_dir)
    model = recovered(card, onnx_path, config.input.channels)
    plain = plain_parity(model, onnx_path, batch, config.task)
    explain = explain_parity(model, model_dir, batch)
    ok = passed(plain, explain, config.task)
    report = {"name": name, "passed": ok, "plain": plain, "explain": explain}
    if not (ok and write):
        return report
    saved = save_weights(model, model_dir / "1" / WEIGHTS_FILE, {"provenance": "model.onnx"})
    again = load_weights(build_network(card), model_dir / "1" / WEIGHTS_FILE)
    if plain_parity(again, onnx_path, batch[:1], config.task) != plain_parity(
        model, onnx_path, batch[:1], config.task
    ):
        raise SystemExit(f"{name}: reloaded weights compute something else")
    card["weights"] = weights_entry(saved, plain, explain, len(batch))
    write_model_card(model_dir, ModelCard.from_dict(card))
    return report | {"weights": card["weights"]}


def point_twin(twin: str, float_name: str) -> None:
    """An INT8 twin's card: migrated, its weights entry the float model's file, no parity."""
    model_dir = MODELS / twin
    card = migrated(model_dir)
    float_weights = ModelCard.from_dict(migrated(MODELS / float_name)).weights
    if float_weights is not None:
        card["weights"] = {
            **{k: float_weights[k] for k in ("sha256", "bytes", "format")},
            "file": f"../{float_name}/{float_weights['file']}",
            "provenance": f"the float weights of {float_name}; this model is their static QDQ "
            "INT8 quantization (1/model.onnx), which no torch network here reproduces",
            "parity": None,
        }
    write_model_card(model_dir, ModelCard.from_dict(card))


def main(argv: list[str] | None = None) -> int:
    """Recover every (or the named) bundled model; exit 1 when any fails its gate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=sorted(IMAGES))
    parser.add_argument("--check", action="store_true", help="gate and report, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    reports = [recover_model(name, not args.check) for name in args.models]
    print(json.dumps(reports, indent=1, default=str))
    if not args.check:
        for twin, float_name in INT8_TWINS.items():
            if (MODELS / twin).is_dir():  # retina-vessels-int8 is no longer bundled
                point_twin(twin, float_name)
        for name in sorted(p.name for p in MODELS.iterdir() if (p / "card.json").is_file()):
            if name not in IMAGES and name not in INT8_TWINS:
                write_model_card(MODELS / name, ModelCard.from_dict(migrated(MODELS / name)))
    return 0 if all(r and r["passed"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
