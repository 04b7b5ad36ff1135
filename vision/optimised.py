"""Graph optimisation done once and stored: `model.onnx` -> `model.optimized.onnx` beside it.

ONNX Runtime rewrites every graph it loads (constant folding, Conv+BN+activation fusion, ...);
the server used to pay for it on every start. `write_optimised` has ORT write the graph it would
run at `ORT_ENABLE_EXTENDED` (fusions for the CPU provider; not the layout passes of
`ORT_ENABLE_ALL`, which ORT warns are tied to the machine that ran them, so those still run at
load), checks that it gives the source's outputs (parity gate), and records in its metadata the
source's SHA-256 and the ORT version. `stored_optimised` returns it only when both still match,
so a re-exported model or an upgraded ORT falls back to optimising at load. GPU providers always
load the source (`vision.runtime`).

    python -m vision.optimised models/*/1/*.onnx    # (re)write the stored graphs
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vision.errors import ConfigError

log = logging.getLogger(__name__)

SUFFIX = ".optimized.onnx"
SOURCE_KEY = "vision.optimised.source_sha256"
ORT_KEY = "vision.optimised.onnxruntime"
RTOL, ATOL = 1e-3, 1e-4
_INT_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def optimised_path(source: str | Path) -> Path:
    """Where the stored optimised graph of `source` lives (`x.onnx` -> `x.optimized.onnx`)."""
    source = Path(source)
    return source.with_name(source.name.removesuffix(".onnx") + SUFFIX)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stored_optimised(source: str | Path) -> Path | None:
    """The stored optimised graph of `source`, if there is one (`stamp_matches` then says
    whether a session opened over it may be used)."""
    source = Path(source)
    stored = optimised_path(source)
    if source.name.endswith(SUFFIX) or not stored.is_file():
        return None
    return stored


def stamp_matches(metadata: dict[str, str], source: str | Path) -> bool:
    """True when a stored graph's metadata says it was made from `source` as it is now, by this
    ONNX Runtime version; logs why not."""
    source = Path(source)
    if metadata.get(ORT_KEY) != ort.__version__:
        log.info(
            "stored graph of %s was written by onnxruntime %s, this is %s; optimising at load",
            source.name,
            metadata.get(ORT_KEY),
            ort.__version__,
        )
        return False
    if metadata.get(SOURCE_KEY) != file_sha256(source):
        log.warning(
            "stored graph of %s is stale (the model changed); optimising at load", source.name
        )
        return False
    return True


def _feeds(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Random floats for float inputs, zeros (valid indices) for integer ones."""
    rng = np.random.default_rng(0)
    feeds = {}
    for node in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in node.shape]
        if node.shape and not isinstance(node.shape[0], int):
            dims[0] = batch
        if node.type == "tensor(float)":
            feeds[node.name] = rng.random(dims, np.float32)
        else:
            feeds[node.name] = np.zeros(dims, _INT_TYPES.get(node.type, np.int64))
    return feeds


def _session(path: Path, level: ort.GraphOptimizationLevel, out: Path | None = None):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    if out is not None:
        options.optimized_model_filepath = str(out)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(source: Path, stored: Path, batch: int = 2) -> float:
    """Largest |difference| between the source and the stored graph, each loaded as the server
    loads it (`ORT_ENABLE_ALL`); ConfigError past the tolerance."""
    plain = _session(source, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    fused = _session(stored, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    feeds = _feeds(plain, batch)
    worst = 0.0
    for want, got in zip(plain.run(None, feeds), fused.run(None, feeds), strict=True):
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        worst = max(worst, float(np.max(np.abs(want - got), initial=0.0)))
        if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
            raise ConfigError(
                f"{stored.name} differs from {source.name} by up to {worst:.3g}; not stored "
                "(the server optimises at load instead)"
            )
    return worst


def write_optimised(source: str | Path) -> Path:
    """Write, parity-check and stamp the stored optimised graph of `source`; its path."""
    import onnx

    source = Path(source)
    target = optimised_path(source)
    scratch = target.with_name(target.name + ".tmp")
    _session(source, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, scratch)
    model = onnx.load(str(scratch))
    for key, value in ((SOURCE_KEY, file_sha256(source)), (ORT_KEY, ort.__version__)):
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(scratch))
    try:
        worst = parity(source, scratch)
    except Exception:
        scratch.unlink(missing_ok=True)
        raise
    scratch.replace(target)
    log.info("stored %s (max |diff| %.3g vs %s)", target.name, worst, source.name)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Write the stored optimised graph of each ONNX file given."""
    p = argparse.ArgumentParser(
        prog="python -m vision.optimised", description=__doc__.split("\n")[0]
    )
    p.add_argument("models", nargs="+", type=Path, help="model.onnx files (stored graphs skipped)")
    args = p.parse_args(argv)
    for source in args.models:
        if source.name.endswith(SUFFIX):
            continue
        print(f"{write_optimised(source)} (parity ok)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
