"""Where one model's load time goes, step by step, in this process (`bench.coldstart --profile`).

Steps: read the config, open the plain session (`vision.runtime.OnnxModel`, which uses the
stored optimised graph when there is one), warm it up once per batch size the server warms, open
the explain session and run the load-time parity check `Explainer.check_outputs`. For
comparison it also opens the plain graph with ONNX Runtime optimising it from scratch (what every
start cost before the optimised graph was stored). `import_profile` is `bench.coldstart
--importtime`: the top cumulative imports of one real start.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from bench.coldstart import HOST, Probe, _stop, _wait, free_port, serve_command


def _timed(step, *args):
    started = time.perf_counter()
    value = step(*args)
    return value, time.perf_counter() - started


def _fresh_session_s(path: Path) -> float:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    started = time.perf_counter()
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return time.perf_counter() - started


def profile_model(model_dir: Path) -> str:
    """One line: the seconds of each load step of the latest version of `model_dir`."""
    from serving.repository import warmup_batches
    from vision.config import load_config
    from vision.loader import latest_version
    from vision.runtime import OnnxModel
    from vision.xai.explainer import Explainer

    config, t_config = _timed(load_config, model_dir)
    folder = model_dir / latest_version(model_dir, config.model_file)
    session, t_session = _timed(OnnxModel, folder / config.model_file, config.runtime)
    sizes = warmup_batches(config, session.providers)
    _, t_warm = _timed(session.warmup, sizes)
    top = (max(1, config.batching.max_batch_size),)
    _, t_cold_top = _timed(session.warmup, top)  # first run at the max batch after warm-up
    _, t_warm_top = _timed(session.warmup, top)  # and the next one
    parts = [
        f"{config.name:22s} config {t_config:.3f}",
        f"session {t_session:.3f} ({'stored optimised' if session.optimised else 'optimised now'})",
        f"warm-up {sizes} {t_warm:.3f}",
        f"batch {top[0]} first {t_cold_top:.3f} / next {t_warm_top:.3f}",
    ]
    if config.explain.file:
        explain, t_explain = _timed(OnnxModel, folder / config.explain.file, config.runtime)
        parts.append(f"explain session {t_explain:.3f}")
        if config.task == "segmentation":
            explainer = Explainer(config, explain)
            _, t_check = _timed(explainer.check_outputs, session)
            parts.append(f"parity check {t_check:.3f}")
    parts.append(f"[unstored: ORT optimises {_fresh_session_s(folder / config.model_file):.3f}]")
    return ", ".join(parts)


def import_profile(models: Path, names: list[str], top: int = 15) -> str:
    """`python -X importtime` of one start until every model is READY: top cumulative imports."""
    port = free_port()
    probe = Probe(f"{HOST}:{port}")
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            serve_command(models, port, ["-X", "importtime"]),
            stdout=subprocess.DEVNULL,
            stderr=err,
            process_group=0,
        )
        try:
            _wait(process, started, lambda: probe.ready(names), Path(err.name))
        finally:
            probe.channel.close()
            _stop(process)
        rows = _import_rows(Path(err.name).read_text(errors="replace"))
    total = sum(us for us, _, depth in rows if depth == 0) / 1e6
    lines = [f"imports: {total:.2f} s in all (top-level modules, self+children)"]
    tops = sorted((r for r in rows if r[2] == 0), reverse=True)[:top]
    lines += [f"  {us / 1e6:6.3f} s  {name}" for us, name, _ in tops]
    return "\n".join(lines)


def _import_rows(text: str) -> list[tuple[int, str, int]]:
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line[12:].split("|", 2))
        raw = line[12:].split("|", 2)[2]
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        rows.append((int(cumulative), name, depth))
    return rows
