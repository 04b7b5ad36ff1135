"""A minimal PyTriton server over an ONNX model (onnxruntime in the infer function).

Runs in its own venv (bench/.venvs/pytriton: nvidia-pytriton, onnxruntime, numpy), never in
ours. PyTriton's bundled tritonserver needs this interpreter's libpython directory on
LD_LIBRARY_PATH (bench/serving.py sets it from sysconfig LIBDIR). Loopback only:

    python pytriton_server.py --onnx model.onnx --name tiny --grpc-port P --http-port H \
        --metrics-port M [--max-batch-size 8] [--queue-delay-us 1000]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

LOOPBACK = "127.0.0.1"
_DTYPES = {"tensor(float)": np.float32}


def session_options() -> ort.SessionOptions:
    """ONNX Runtime's defaults, except BENCH_ORT_THREADS intra-op threads when set: in a pinned
    run (bench.workers --server-cpus), since the default pool pins one thread per core itself
    and so escapes taskset."""
    options = ort.SessionOptions()
    threads = int(os.environ.get("BENCH_ORT_THREADS", "0"))
    if threads > 0:
        options.intra_op_num_threads = threads
    return options


def _tensors(nodes: list) -> list[Tensor]:
    """PyTriton tensor specs (no batch dimension) of ONNX Runtime inputs or outputs."""
    return [
        Tensor(name=n.name, dtype=_DTYPES[n.type], shape=tuple(int(d) for d in n.shape[1:]))
        for n in nodes
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--queue-delay-us", type=int, default=1000)
    args = parser.parse_args()

    session = ort.InferenceSession(args.onnx, session_options(), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, inputs), strict=True))

    config = TritonConfig(
        grpc_address=LOOPBACK,
        grpc_port=args.grpc_port,
        http_address=LOOPBACK,
        http_port=args.http_port,
        metrics_address=LOOPBACK,
        metrics_port=args.metrics_port,
    )
    model_config = ModelConfig(
        max_batch_size=args.max_batch_size,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=_tensors(session.get_inputs()),
            outputs=_tensors(session.get_outputs()),
            config=model_config,
        )
        triton.serve()


if __name__ == "__main__":
    main()
