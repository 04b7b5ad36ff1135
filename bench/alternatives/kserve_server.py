"""A minimal KServe server (v2 protocol, gRPC) over an ONNX model, for bench/serving.py.

Runs in its own venv (bench/.venvs/kserve: kserve, onnxruntime, numpy), never in ours:
`python kserve_server.py --onnx model.onnx --name tiny --grpc-port P --http-port H`.
KServe hard-codes its listen addresses to all interfaces; they are rewritten to 127.0.0.1 here.
KServe parses sys.argv itself (with abbreviations), so our options avoid its prefixes.
"""

from __future__ import annotations

import argparse
import functools
import os

import grpc.aio
import kserve
import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse

LOOPBACK = "127.0.0.1"


def _loopback_only() -> None:
    """Make KServe's gRPC ([::]:port) and REST (0.0.0.0) servers listen on 127.0.0.1 only."""
    add_port = grpc.aio._server.Server.add_insecure_port

    @functools.wraps(add_port)
    def add_insecure_port(self, address: str) -> int:
        return add_port(self, f"{LOOPBACK}:{address.rsplit(':', 1)[1]}")

    grpc.aio._server.Server.add_insecure_port = add_insecure_port
    config_init = uvicorn.Config.__init__

    @functools.wraps(config_init)
    def init(self, *args, **kwargs) -> None:
        config_init(self, *args, **{**kwargs, "host": LOOPBACK})

    uvicorn.Config.__init__ = init


def session_options() -> ort.SessionOptions:
    """ONNX Runtime's defaults, except BENCH_ORT_THREADS intra-op threads when set: in a pinned
    run (bench.workers --server-cpus), since the default pool pins one thread per core itself
    and so escapes taskset."""
    options = ort.SessionOptions()
    threads = int(os.environ.get("BENCH_ORT_THREADS", "0"))
    if threads > 0:
        options.intra_op_num_threads = threads
    return options


class OnnxModel(kserve.Model):
    """One ONNX Runtime session (default options) answering v2 infer requests."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self._path = path
        self._session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        self._session = ort.InferenceSession(
            self._path, session_options(), providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        array = payload.inputs[0].as_numpy()
        values = self._session.run(self._outputs, {self._input: array})
        outputs = []
        for name, value in zip(self._outputs, values, strict=True):
            output = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            output.set_data_from_numpy(value, binary_data=True)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            from_grpc=payload.from_grpc,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()
    _loopback_only()
    model = OnnxModel(args.name, args.onnx)
    server = kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=True, workers=1
    )
    server.start([model])


if __name__ == "__main__":
    main()
