"""Benchmark models (built at run time with the onnx helper API) and their in-process baselines.

`seg256`: a 256x256 segmenter doing real work (3x3 convolutions, fixed random weights).
`tiny`: a 1x1 convolution on 3x32x32, where serving overhead dominates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serving.config import DEFAULT_MAX_IMAGE_PIXELS
from vision.config import ModelConfig, parse_config, write_config
from vision.io import decode_image
from vision.loader import load_model
from vision.masks import encode_png
from vision.pipeline import Pipeline
from vision.render import encode_png_rgb

OPSET = [helper.make_opsetid("", 17)]
INPUT, OUTPUT = "images", "logits"


@dataclass(frozen=True)
class BenchModel:
    """A model folder in the benchmark repository, with one request's worth of input."""

    name: str
    folder: Path
    png: bytes  # the image, PNG-encoded (vision.v1 Segment input)
    tensor: np.ndarray  # the same image preprocessed, [1, C, H, W] float32 (KServe input)

    @property
    def onnx_path(self) -> Path:
        return self.folder / "1" / "model.onnx"


def _conv(rng: np.random.Generator, name: str, cin: int, cout: int, k: int) -> list:
    """Initializers (He-scaled weights, small bias) for one convolution."""
    weight = rng.normal(0.0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
    bias = rng.normal(0.0, 0.05, cout).astype(np.float32)
    return [
        numpy_helper.from_array(weight, f"{name}_w"),
        numpy_helper.from_array(bias, f"{name}_b"),
    ]


def _save(nodes: list, inits: list, size: int, classes: int, path: Path) -> Path:
    graph = helper.make_graph(
        nodes,
        path.parent.parent.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", classes, size, size])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def conv_segmenter(path: Path, size: int = 256, width: int = 16, depth: int = 2) -> Path:
    """images [N,3,size,size] -> logits [N,2,size,size]: `depth` 3x3 conv+ReLU, then a 1x1 conv."""
    rng = np.random.default_rng(0)
    nodes, inits, previous, cin = [], [], INPUT, 3
    for i in range(depth):
        inits += _conv(rng, f"c{i}", cin, width, 3)
        nodes += [
            helper.make_node(
                "Conv",
                [previous, f"c{i}_w", f"c{i}_b"],
                [f"c{i}"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        previous, cin = f"r{i}", width
    inits += _conv(rng, "head", cin, 2, 1)
    nodes.append(helper.make_node("Conv", [previous, "head_w", "head_b"], [OUTPUT]))
    return _save(nodes, inits, size, 2, path)


def pointwise_segmenter(path: Path, size: int = 32) -> Path:
    """images [N,3,size,size] -> logits [N,2,size,size] with one 1x1 convolution."""
    inits = _conv(np.random.default_rng(1), "head", 3, 2, 1)
    nodes = [helper.make_node("Conv", [INPUT, "head_w", "head_b"], [OUTPUT])]
    return _save(nodes, inits, size, 2, path)


def model_config(name: str, size: int, queue_delay_ms: float) -> ModelConfig:
    """A segmentation config: stretch to `size`, argmax, batching up to 8."""
    return parse_config(
        {
            "name": name,
            "task": "segmentation",
            "labels": ["background", "foreground"],
            "input": {"name": INPUT, "height": size, "width": size, "channels": 3},
            "preprocess": {"resize": "stretch"},
            "postprocess": {"type": "argmax", "output": OUTPUT},
            "batching": {
                "max_batch_size": 8,
                "max_queue_delay_ms": queue_delay_ms,
                "max_queue_size": 128,
            },
        }
    )


def synthetic_image(size: int) -> np.ndarray:
    """A smooth HxWx3 uint8 RGB image (gradients and a disc), so masks and PNGs are realistic."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    disc = ((x - 0.55) ** 2 + (y - 0.45) ** 2 < 0.08).astype(np.float32)
    rgb = np.stack([x, y, 0.5 * (x + y)], axis=-1) * 160 + disc[..., None] * 90
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _bench_model(folder: Path, config: ModelConfig) -> BenchModel:
    write_config(config, folder)
    size = config.input.height
    png = encode_png_rgb(synthetic_image(size))
    tensor, _ = Pipeline(config).preprocess(decode_image(png))
    return BenchModel(config.name, folder, png, np.ascontiguousarray(tensor[np.newaxis]))


def write_repository(root: Path, queue_delay_ms: float, seg_width: int = 16) -> list[BenchModel]:
    """Build both models with their config.yaml under `root`; the seg model first."""
    seg = model_config("seg256", 256, queue_delay_ms)
    conv_segmenter(root / seg.name / "1" / "model.onnx", 256, width=seg_width)
    tiny = model_config("tiny", 32, queue_delay_ms)
    pointwise_segmenter(root / tiny.name / "1" / "model.onnx", 32)
    return [_bench_model(root / seg.name, seg), _bench_model(root / tiny.name, tiny)]


def session_call(model: BenchModel) -> Callable[[], object]:
    """In-process baseline (a): session.run on the tensor, the server's session settings."""
    session = load_model(model.folder, explain=False).session.session
    feeds = {INPUT: model.tensor}
    return lambda: session.run(None, feeds)


def pipeline_call(model: BenchModel) -> Callable[[], object]:
    """In-process baseline (c): PNG decode, preprocess, run, postprocess, masks encoded as PNG.

    The same steps the server takes for a vision.v1 Segment call, without gRPC.
    """
    loaded = load_model(model.folder, explain=False)

    def call() -> object:
        result = loaded.predict(decode_image(model.png, DEFAULT_MAX_IMAGE_PIXELS))
        return [encode_png(m.mask) for m in result.masks]

    return call
