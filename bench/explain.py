"""Explain latency: heat maps through our server against plain inference and pytorch-grad-cam.

    python -m bench.explain [--calls N] [--rounds R] [--threads T] [--device cpu|cuda]
                            [--explain-graph PATH]

For each bundled model (`retina-vessels`, segmentation; `blood-cells`, detection) and one real
image (DRIVE 01_test.tif, BCCD BloodImage_00007.jpg; a synthetic image when the dataset is
missing), sequential calls (concurrency 1), interleaved in `--rounds` rounds:

* plain: vision.v1 Segment / Detect through our server (`python -m app serve`);
* explain option: the same call with `explain` set (default options: every found class / box,
  at most the model's explain.max_targets), heat maps as float16, no overlay;
* Explain RPC: the same image through `Explain`;
* pytorch-grad-cam: in this process, on the eager torch checkpoint (runs/<name>/best.pt), the
  class matching the model's explain method (GradCAM, GradCAMPlusPlus or HiResCAM) on the
  config's `explain.target_layer`, the same preprocessed tensor repeated once per target and the
  same targets the server explains, one call (= one batched forward and backward). Only the
  CAM call is timed (no decode, preprocess, prediction or resize to the original image), so
  the ratio against our end-to-end request understates our lead. Skipped with a message when
  torch, pytorch-grad-cam or the checkpoint is missing.

A second table splits each server path into the server's own stage timings (medians) and
`wire`: client latency minus the server's total (serialising the reply, float16 heat-map bytes
included, transport, parsing), with the reply size. `--explain-graph PATH` serves the detectors
with another explain graph (a before / after pair of runs with the same code).

Latencies are client-observed medians; `explain ms` is the server's own `timings.explain_ms`
(explain-graph run + heat maps to the original image), the like-for-like figure against the
pytorch-grad-cam call. For a detector whose explain graph is split (`vision.xai.split_graph`)
the explain paths run no plain inference (`inference` 0): `explain ms` then holds the one
forward pass, the postprocessing and the backward too. On a machine shared with other work
use `--threads 1` (oversubscribed OpenMP threads slow eager torch far more than ONNX Runtime;
bench/README.md). The server is killed at exit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from bench import loadgen
from bench.serving import HOST, free_port, server_process
from protos.vision.v1 import vision_pb2 as pb
from vision.config import ModelConfig, load_config, write_config
from vision.io import decode_image
from vision.loader import load_model, version_numbers
from vision.paths import PROJECT_ROOT, datasets_root
from vision.pipeline import Pipeline
from vision.xai.split_graph import part_paths

DETECT = "/vision.v1.VisionService/Detect"
SEGMENT = "/vision.v1.VisionService/Segment"
EXPLAIN = "/vision.v1.VisionService/Explain"
PLAIN, OPTION, RPC, GRADCAM = "plain", "explain option", "Explain RPC", "pytorch-grad-cam"
GOAL_EXPLAIN_OVER_PLAIN = 2.0  # explain option latency <= 2x plain
GOAL_DETECT_EXPLAIN_OVER_PLAIN = 4.0  # a detector, every box (up to 10): issue 19 item 4
GOAL_GRADCAM_OVER_OURS = 3.0  # ours >= 3x faster than pytorch-grad-cam eager
IMAGES = {
    "retina-vessels": datasets_root() / "drive" / "DRIVE" / "test" / "images" / "01_test.tif",
    "blood-cells": datasets_root() / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00007.jpg",
}
STAGES = ("decode", "preprocess", "queue", "inference", "postprocess", "explain", "total")
GRADCAM_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM"}


@dataclass
class Measured:
    """One measured path: its call, and the latencies (ms) and server explain_ms it gave."""

    call: Callable[[], bytes | None]
    parse: Callable[[bytes], object] | None = None
    latencies_ms: list[float] = field(default_factory=list)
    explain_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    reply_bytes: int = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            data = self.call()
            latency = (time.perf_counter() - start) * 1000.0
            self.latencies_ms.append(latency)
            if self.parse is not None and data is not None:
                timings = self.parse(data).timings
                if timings.explain_ms:
                    self.explain_ms.append(timings.explain_ms)
                self._stages(timings, latency, len(data))

    def _stages(self, timings: object, latency_ms: float, size: int) -> None:
        """The server's own stage timings, and what the client saw beyond the server's total
        (serialising, transport, parsing the reply)."""
        self.reply_bytes = size
        for name in STAGES:
            self.stages_ms.setdefault(name, []).append(getattr(timings, name + "_ms"))
        self.stages_ms.setdefault("wire", []).append(latency_ms - timings.total_ms)

    def clear(self) -> None:
        """Forget the calls so far (after warm-up)."""
        self.latencies_ms.clear()
        self.explain_ms.clear()
        self.stages_ms.clear()


@dataclass
class ModelBench:
    name: str
    config: ModelConfig
    image_bytes: bytes
    image_label: str
    paths: dict[str, Measured] = field(default_factory=dict)
    findings: int = 0
    heatmaps: int = 0
    note: str = ""


def _image(name: str, config: ModelConfig) -> tuple[bytes, str]:
    path = IMAGES[name]
    if path.is_file():
        return path.read_bytes(), path.name
    import cv2

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (config.input.height, config.input.width, 3), dtype=np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes(), f"synthetic {pixels.shape} ({path} missing)"


def write_repository(root: Path, names: list[str], args: argparse.Namespace) -> list[ModelConfig]:
    """Config copies (runtime set by --device / --threads) over the bundled version folders."""
    configs = []
    for name in names:
        source = PROJECT_ROOT / "models" / name
        config = load_config(source)
        runtime = replace(
            config.runtime,
            providers=(args.device,),
            intra_op_threads=args.threads,
            allow_spinning=False,
            tensorrt_cache_dir=str(root / ".trt-cache"),
        )
        config = replace(config, runtime=runtime)
        write_config(config, root / name)
        for version in version_numbers(source, config.model_file):
            _link_version(source / str(version), root / name / str(version), config, args)
        configs.append(config)
    return configs


def _link_version(source: Path, target: Path, config: ModelConfig, args) -> None:
    """The version folder as a link, or with `--explain-graph` (detectors) a folder of links
    whose explain graph (and its stored optimised graph and split parts, when beside it) is
    that file."""
    graph = Path(args.explain_graph) if args.explain_graph else None
    if graph is None or config.task != "detection":
        target.symlink_to(source.resolve())
        return
    target.mkdir()
    explain = Path(config.explain.file)
    optimised = explain.with_name(explain.stem + ".optimized.onnx")
    given = {explain.name: graph, optimised.name: graph.with_name(graph.stem + ".optimized.onnx")}
    for ours, theirs in zip(part_paths(explain), part_paths(graph), strict=True):
        given[ours.name] = theirs  # the bundled parts would be stale for that graph
    for item in source.iterdir():
        if item.name not in given:
            (target / item.name).symlink_to(item.resolve())
    for name, path in given.items():
        if path.is_file():
            (target / name).symlink_to(path.resolve())


def _requests(bench: ModelBench, max_findings: int) -> dict[str, tuple[str, bytes, Callable]]:
    model, image = pb.ModelRef(name=bench.name), pb.ImageInput(encoded=bench.image_bytes)
    if bench.config.task == "detection":
        plain = pb.DetectRequest(model=model, image=image)
        method, response = DETECT, pb.DetectResponse
    else:
        plain = pb.SegmentRequest(model=model, image=image, mask_encoding=pb.MASK_ENCODING_PNG)
        method, response = SEGMENT, pb.SegmentResponse
    option = type(plain)()
    option.CopyFrom(plain)
    option.explain.SetInParent()
    option.explain.max_findings = max_findings
    rpc = pb.ExplainRequest(model=model, image=image)
    return {
        PLAIN: (method, plain.SerializeToString(), response.FromString),
        OPTION: (method, option.SerializeToString(), response.FromString),
        RPC: (EXPLAIN, rpc.SerializeToString(), pb.ExplainResponse.FromString),
    }


def _check_same_findings(bench: ModelBench, plain: object, explained: object) -> None:
    if bench.config.task == "detection":
        same = list(plain.detections) == list(explained.detections)
        bench.findings = len(plain.detections)
    else:
        same = list(plain.masks) == list(explained.masks)
        bench.findings = len(plain.masks)
    bench.heatmaps = len(explained.heatmaps)
    if not same:
        raise RuntimeError(f"{bench.name}: findings with explain differ from those without")


def _first_call(call: Callable[[], bytes], wait_s: float = 120.0) -> bytes:
    """The first reply, retrying while the explain graph still loads (UNAVAILABLE)."""
    import grpc

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def server_paths(bench: ModelBench, address: str, max_findings: int) -> None:
    channel = loadgen.open_channel(address)
    replies = {}
    for label, (method, payload, parse) in _requests(bench, max_findings).items():
        call = loadgen.unary(channel, method, payload)
        replies[label] = parse(_first_call(call))
        bench.paths[label] = Measured(call, parse)
    _check_same_findings(bench, replies[PLAIN], replies[OPTION])


def _torch_model(config: ModelConfig):
    """The eager checkpoint runs/<name>/best.pt in eval mode, or a reason it is not there."""
    checkpoint = PROJECT_ROOT / "runs" / config.name / "best.pt"
    if not checkpoint.is_file():
        return None, f"{checkpoint} is missing"
    import torch

    if config.task == "detection":  # as vision.detect.exporting.load_checkpoint, no torchvision
        from vision.detect.model import build_model, spec_from_dict

        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = build_model(spec_from_dict(state["spec"]))
        model.load_state_dict(state["ema"])
        return model.eval(), ""
    from vision.segment.export import _load_checkpoint

    return _load_checkpoint(checkpoint)[0], ""


def _targets(bench: ModelBench, tensor: np.ndarray, meta, max_findings: int) -> tuple[list, list]:
    """The classes and aux targets the server explains for this image (same selection rules)."""
    config = bench.config
    loaded = load_model(PROJECT_ROOT / "models" / bench.name, explain=False, config=config)
    outputs = loaded.run(tensor[None])
    result = loaded.pipeline.postprocess({k: v[0] for k, v in outputs.items()}, meta)
    cap = min(max_findings or config.explain.max_targets, config.explain.max_targets)
    if config.task == "detection":
        top = sorted(result.detections, key=lambda d: -d.score)[:cap]
        return [d.class_id for d in top], [d.anchor for d in top]
    classes = sorted({m.class_id for m in result.masks})[:cap]
    return classes, [np.ones((1, *tensor.shape[-2:]), np.float32) for _ in classes]


def gradcam_path(bench: ModelBench, args: argparse.Namespace) -> None:
    """pytorch-grad-cam on the eager model, or a note why not."""
    try:
        import pytorch_grad_cam
        import torch
    except ImportError as exc:
        bench.note = f"pytorch-grad-cam skipped: {exc}"
        return
    from vision.xai.explain_graph import build_explain_module
    from vision.xai.targets import gradcam_targets

    model, reason = _torch_model(bench.config)
    if model is None:
        bench.note = f"pytorch-grad-cam skipped: {reason}"
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "cuda" else "cpu"
    tensor, meta = Pipeline(bench.config).preprocess(decode_image(bench.image_bytes))
    classes, aux = _targets(bench, tensor, meta, args.max_findings)
    if len(classes) != bench.heatmaps:
        raise RuntimeError(f"{bench.name}: {len(classes)} targets here, server {bench.heatmaps}")
    if not classes:
        bench.note = "pytorch-grad-cam skipped: nothing found to explain"
        return
    module = build_explain_module(model, bench.config.explain.target_layer, bench.config.task)
    net = module.model.to(device)
    aux_t = torch.tensor(np.array(aux))
    targets = gradcam_targets(bench.config.task, torch.tensor(classes), aux_t)
    batch = torch.from_numpy(np.repeat(tensor[None], len(classes), axis=0)).to(device)
    cls = getattr(pytorch_grad_cam, GRADCAM_CLASSES[bench.config.explain.method])
    cam = cls(net, [module.target_layer])

    def call() -> None:
        cam(batch, targets)
        if device == "cuda":
            torch.cuda.synchronize()

    bench.paths[GRADCAM] = Measured(call)
    bench.note = (
        f"pytorch-grad-cam (grad-cam {metadata.version('grad-cam')}) {cls.__name__} on "
        f"{bench.config.explain.target_layer}, torch {torch.__version__} {device}, "
        f"{torch.get_num_threads()} threads"
    )


def measure(benches: list[ModelBench], args: argparse.Namespace) -> None:
    """Warm up, then every path of every model in turn, `--rounds` times (order alternating)."""
    for bench in benches:
        for path in bench.paths.values():
            path.run(args.warmup)
            path.clear()
    per_round = max(1, args.calls // args.rounds)
    for index in range(args.rounds):
        print(f"round {index + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for bench in benches:
            labels = list(bench.paths)
            for label in labels if index % 2 == 0 else reversed(labels):
                bench.paths[label].run(per_round)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def stages(benches: list[ModelBench]) -> None:
    """Where each server path's time goes: median server stage timings (ms), `wire` = client
    latency - server total (serialise, transport, parse), and the reply size."""
    names = [*STAGES, "wire"]
    print(f"{'model':<15} {'path':<17} " + " ".join(f"{n[:8]:>8}" for n in names) + "  reply KB")
    for bench in benches:
        for label, path in bench.paths.items():
            if not path.stages_ms:
                continue
            cells = " ".join(f"{_median(path.stages_ms[n]):8.1f}" for n in names)
            print(f"{bench.name:<15} {label:<17} {cells}  {path.reply_bytes / 1024:8.0f}")
    print()


def report(benches: list[ModelBench]) -> None:
    print(
        f"\n{'model':<15} {'path':<17} {'calls':>5} {'p50 ms':>8} {'mean ms':>8} "
        f"{'explain ms':>10} {'x plain':>8}"
    )
    for bench in benches:
        plain = _median(bench.paths[PLAIN].latencies_ms)
        for label, path in bench.paths.items():
            p50 = _median(path.latencies_ms)
            server = f"{_median(path.explain_ms):10.1f}" if path.explain_ms else f"{'':>10}"
            print(
                f"{bench.name:<15} {label:<17} {len(path.latencies_ms):>5} {p50:>8.1f} "
                f"{statistics.fmean(path.latencies_ms):>8.1f} {server} {p50 / plain:>7.2f}x"
            )
    print()
    stages(benches)
    for bench in benches:
        paths = bench.paths
        plain, option = _median(paths[PLAIN].latencies_ms), _median(paths[OPTION].latencies_ms)
        rpc = _median(paths[RPC].latencies_ms)
        print(
            f"{bench.name}: {bench.image_label}, {bench.findings} finding(s), "
            f"{bench.heatmaps} heat map(s)"
        )
        goal = GOAL_EXPLAIN_OVER_PLAIN
        if bench.config.task == "detection":
            goal = GOAL_DETECT_EXPLAIN_OVER_PLAIN
        ok = "meets" if option / plain <= goal else "misses"
        print(
            f"ratio {bench.name} explain option / plain: {option / plain:.2f}x "
            f"({ok} goal <= {goal:g}x); Explain RPC / plain: {rpc / plain:.2f}x"
        )
        if bench.heatmaps:
            per_map = (option - plain) / bench.heatmaps
            print(
                f"  added per heat map: {per_map:.1f} ms = {per_map / plain:.2f}x plain "
                f"((explain option - plain) / {bench.heatmaps})"
            )
        if GRADCAM in paths:
            theirs = _median(paths[GRADCAM].latencies_ms)
            server = _median(paths[OPTION].explain_ms)
            ok = "meets" if theirs / option >= GOAL_GRADCAM_OVER_OURS else "misses"
            print(
                f"ratio {bench.name} pytorch-grad-cam / ours (explain option, end to end): "
                f"{theirs / option:.2f}x ({ok} goal >= {GOAL_GRADCAM_OVER_OURS:g}x); "
                f"/ ours (server explain_ms): {theirs / server:.2f}x"
            )
        if bench.note:
            print(f"  {bench.note}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="retina-vessels,blood-cells")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per path, in all")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per path first")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op and torch threads; 0: theirs",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--no-gradcam", action="store_true", help="skip pytorch-grad-cam")
    parser.add_argument(
        "--max-findings",
        type=int,
        default=0,
        help="ExplainOptions.max_findings of the explain option (and grad-cam's targets); "
        "0: the model's explain.max_targets. The Explain RPC always uses the latter",
    )
    parser.add_argument(
        "--boxes",
        default="",
        help="comma-separated box counts (e.g. 1,3,6,10): blood-cells heat maps per box count "
        "vs plain, in process (bench/explain_boxes.py), written to --out or else "
        "bench/results/explain.json",
    )
    parser.add_argument(
        "--old-graph", default="", help="with --boxes: another explain graph too, interleaved"
    )
    parser.add_argument(
        "--boxes-model",
        default="",
        help="with --boxes: this bundled detector instead of blood-cells (e.g. pcb-defects)",
    )
    parser.add_argument(
        "--boxes-image", default="", help="with --boxes: this image instead of the default"
    )
    parser.add_argument("--out", default="", help="also write the figures to this JSON file")
    parser.add_argument(
        "--explain-graph",
        default="",
        help="serve the detectors with this explain graph instead of the bundled one (a "
        "before / after run; its .optimized.onnx twin is used when beside it)",
    )
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.boxes:
        from bench.explain_boxes import run

        counts = [int(c) for c in args.boxes.split(",") if c]
        out = Path(args.out) if args.out else PROJECT_ROOT / "bench" / "results" / "explain.json"
        model_dir = PROJECT_ROOT / "models" / args.boxes_model if args.boxes_model else None
        image = Path(args.boxes_image) if args.boxes_image else None
        run(counts, max(3, args.calls), args.threads, args.old_graph or None, out, model_dir, image)
        return 0
    names = [n for n in args.models.split(",") if n]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"bench.explain: {os.cpu_count()} CPUs (load average {load}), device {args.device}, "
        f"threads {args.threads or 'default'}, {args.calls} calls per path in {args.rounds} "
        "interleaved rounds, concurrency 1"
        + (f", explain graph {args.explain_graph}" if args.explain_graph else ""),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as tmp_name:
        tmp = Path(tmp_name)
        configs = write_repository(tmp / "models", names, args)
        port = free_port()
        command = [sys.executable, "-m", "app", "serve", "--models", str(tmp / "models")]
        command += ["--host", HOST, "--grpc-port", str(port), "--http-port", "-1"]
        command += ["--log-level", "WARNING"]
        with server_process("ours", command, port, names, tmp / "ours.log") as ours:
            print(f"ours: cold start {ours.cold_start_s:.2f} s", flush=True)
            benches = [ModelBench(c.name, c, *_image(c.name, c)) for c in configs]
            for bench in benches:
                server_paths(bench, ours.address, args.max_findings)
                if not args.no_gradcam:
                    gradcam_path(bench, args)
            measure(benches, args)
        report(benches)
    if args.out:
        write_results(Path(args.out), benches, args, load)
    return 0


def write_results(path: Path, benches: list[ModelBench], args, load: str) -> None:
    """The medians per model and path (latency, server stages, wire, reply size) as JSON."""
    import json

    models = {}
    for bench in benches:
        plain = _median(bench.paths[PLAIN].latencies_ms)
        paths = {}
        for label, measured in bench.paths.items():
            p50 = _median(measured.latencies_ms)
            paths[label] = {
                "p50_ms": p50,
                "x_plain": p50 / plain,
                "stages_ms": {n: _median(v) for n, v in measured.stages_ms.items()},
                "reply_bytes": measured.reply_bytes,
            }
        models[bench.name] = {"image": bench.image_label, "heatmaps": bench.heatmaps}
        models[bench.name]["paths"] = paths
    figures = {"load_at_start": load, "load_at_end": list(os.getloadavg()), "models": models}
    figures |= {"threads": args.threads, "calls": args.calls, "explain_graph": args.explain_graph}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
