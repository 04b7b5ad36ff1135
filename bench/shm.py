"""seg256 through gRPC bytes and through system shared memory, against in-process ONNX Runtime.

    python -m bench.shm [--duration S] [--rounds R] [--concurrency 1,4] [--json PATH]
                        [--profile S]

Starts `python -m app serve` on loopback over the benchmark repository (`bench/models.py`) and
runs three paths interleaved, at each concurrency: in-process `session.run` on the tensor,
KServe ModelInfer with the tensor in `raw_input_contents`, and ModelInfer with the input and the
output in registered shared-memory regions (one pair per client worker). The shared-memory call
copies the tensor into its input region each time (a client that renders straight into the
region saves that copy too) and reads the output from its region. Prints the table and the
ratio lines; writes the figures to bench/results/shm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from bench import loadgen
from bench.models import BenchModel, session_call, write_repository
from bench.serving import HOST, Row, free_port, interleaved, print_table, server_process
from bench.shm_profile import profile
from protos.inference import grpc_service_pb2 as pb
from serving.rpc.kserve_wire import InferReply, serialize_reply, split_request
from serving.shared_memory import SharedMemoryRegistry, TensorRef, write_to_region

REGISTER = "/inference.GRPCInferenceService/SystemSharedMemoryRegister"
SERVER_LIVE = "/inference.GRPCInferenceService/ServerLive"
FLOOR = "gRPC floor: ServerLive"
RESULTS = Path(__file__).resolve().parent / "results" / "shm.json"
SESSION, BYTES, SHM = "in-process session.run", "ModelInfer gRPC bytes", "ModelInfer shared memory"
CODEC_CALLS = 200
GOALS = {"added_p50_ms": {BYTES: 1.0, SHM: 0.3}, "throughput_ratio_c4": {SHM: 0.95}}


def _params(region: str, byte_size: int) -> dict[str, pb.InferParameter]:
    return {
        "shared_memory_region": pb.InferParameter(string_param=region),
        "shared_memory_byte_size": pb.InferParameter(int64_param=byte_size),
    }


class ShmClient:
    """One worker's input and output regions, registered over its own connection."""

    def __init__(self, address: str, model: BenchModel, output_bytes: int) -> None:
        self.tensor = model.tensor
        tag = uuid.uuid4().hex[:10]
        self.blocks = [
            shared_memory.SharedMemory(name=f"bench-{tag}-{part}", create=True, size=size)
            for part, size in (("in", model.tensor.nbytes), ("out", output_bytes))
        ]
        self.channel = loadgen.open_channel(address)
        register = self.channel.unary_unary(REGISTER)
        for block, part in zip(self.blocks, ("in", "out"), strict=True):
            message = pb.SystemSharedMemoryRegisterRequest(
                name=f"{tag}-{part}", key=f"/{block.name}", byte_size=block.size
            )
            register(message.SerializeToString(), timeout=loadgen.CALL_TIMEOUT_S)
        request = pb.ModelInferRequest(model_name=model.name)
        request.inputs.add(
            name="images",
            datatype="FP32",
            shape=list(model.tensor.shape),
            parameters=_params(f"{tag}-in", model.tensor.nbytes),
        )
        request.outputs.add(name="logits", parameters=_params(f"{tag}-out", output_bytes))
        self.rpc = self.channel.unary_unary(loadgen.MODEL_INFER)
        self.payload = request.SerializeToString()
        self.input = np.ndarray(model.tensor.shape, np.float32, buffer=self.blocks[0].buf)
        self.output = np.ndarray((output_bytes // 4,), np.float32, buffer=self.blocks[1].buf)

    def __call__(self) -> np.ndarray:
        self.input[...] = self.tensor
        self.rpc(self.payload, timeout=loadgen.CALL_TIMEOUT_S)
        return self.output

    def close(self) -> None:
        self.input = self.output = None  # release the views before closing the blocks
        self.channel.close()
        for block in self.blocks:
            block.close()
            block.unlink()


def check_same_output(model: BenchModel, shm: ShmClient, infer: Callable[[], bytes]) -> None:
    """The shared-memory path must give the bytes path's bits before anything is timed."""
    expected = pb.ModelInferResponse.FromString(infer()).raw_output_contents[0]
    got = shm().tobytes()
    if got != expected:
        raise RuntimeError(f"{model.name}: shared-memory output differs from the bytes path")


def measure(model: BenchModel, address: str, args: argparse.Namespace) -> list[Row]:
    """The three paths at each concurrency, interleaved."""
    session = session_call(model)
    output_bytes = session()[0].nbytes
    rows = []
    for n in args.concurrency:
        infer = loadgen.infer_calls(address, model.name, "images", model.tensor, n)
        clients = [ShmClient(address, model, output_bytes) for _ in range(n)]
        try:
            check_same_output(model, clients[0], infer[0])
            paths = {SESSION: [session] * n, BYTES: infer, SHM: clients}
            if n == 1:  # the cost of any round trip at all, with nothing in it
                live = loadgen.open_channel(address)
                empty = pb.ServerLiveRequest().SerializeToString()
                paths[FLOOR] = [loadgen.unary(live, SERVER_LIVE, empty)]
            results = interleaved(paths, args.rounds, args.duration / args.rounds)
        finally:
            for client in clients:
                client.close()
        rows += [Row(model.name, path, n, result) for path, result in results.items()]
    return rows


def ratios(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Added p50 (ms) and throughput ratio of each server path over in-process, per concurrency."""
    index = {(r.path, r.concurrency): r.result for r in rows}
    figures: dict[str, dict[str, float]] = {}
    for (path, n), result in sorted(index.items()):
        if path in (SESSION, FLOOR):
            continue
        base = index[(SESSION, n)]
        figures[f"{path} c={n}"] = {
            "added_p50_ms": result.percentile_ms(50) - base.percentile_ms(50),
            "throughput_ratio": result.throughput / base.throughput if base.throughput else 0.0,
        }
    return figures


def print_ratios(figures: dict[str, dict[str, float]]) -> None:
    print()
    for label, values in figures.items():
        path, n = label.rsplit(" c=", 1)
        goal = GOALS["added_p50_ms"].get(path) if n == "1" else None
        p50 = f"p50 {values['added_p50_ms']:+.3f} ms" + (f" (goal <= {goal} ms)" if goal else "")
        goal = GOALS["throughput_ratio_c4"].get(path) if n == "4" else None
        ratio = values["throughput_ratio"]
        thr = f"throughput {ratio:.3f}x" + (f" (goal >= {goal}x)" if goal else "")
        print(f"ratio seg256 c={n} {path} / {SESSION}: {thr}, {p50}")


def paired_paths(model: BenchModel, address: str, n: int) -> dict[str, dict]:
    """`paired_overhead` of the bytes and the shared-memory path, c=1."""
    infer = loadgen.infer_calls(address, model.name, "images", model.tensor, 1)[0]
    client = ShmClient(address, model, session_call(model)()[0].nbytes)
    try:
        return {
            BYTES: paired_overhead(address, model.name, infer, n),
            SHM: paired_overhead(address, model.name, client, n),
        }
    finally:
        client.close()


def paired_overhead(address: str, model: str, call: Callable[[], object], n: int) -> dict:
    """Mean client latency minus the server's own compute for the same `n` sequential requests.

    Scheduling noise on a loaded machine lands in both terms, so their difference (transport,
    gRPC, our code) holds up where two separately timed paths (server vs in-process) do not.
    The server's compute_infer spans the batch run including the hop to the inference thread.
    """
    with loadgen.open_channel(address) as channel:
        before = loadgen._statistics(channel, model)  # noqa: SLF001 - the bench's own helper
        started = time.perf_counter()
        for _ in range(n):
            call()
        client_ms = (time.perf_counter() - started) / n * 1000.0
        after = loadgen._statistics(channel, model)  # noqa: SLF001

    def mean_ms(name: str) -> float:
        old, new = getattr(before, name), getattr(after, name)
        return (new.ns - old.ns) / max(1, new.count - old.count) / 1e6

    compute, request = mean_ms("compute_infer"), mean_ms("success")
    return {
        "client_ms": client_ms,
        "compute_ms": compute,
        "added_ms": client_ms - compute,
        # the data plane's whole request (admission, queue, compute, hand-back) minus compute
        "in_server_ms": request - compute,
        # what the server never sees: client, gRPC both ways, decode and reply in the servicer
        "outside_ms": client_ms - request,
    }


def profiled(model: BenchModel, server, seconds: float) -> str:
    """The server's py-spy breakdown while one shared-memory client runs (bench/shm_profile.py)."""
    client = ShmClient(server.address, model, session_call(model)()[0].nbytes)
    try:
        return profile(server.process.pid, client, seconds)
    finally:
        client.close()


def _median_us(call: Callable[[], object]) -> float:
    times = []
    for _ in range(CODEC_CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def codec_costs(model: BenchModel, output: np.ndarray) -> dict[str, float]:
    """Server-side tensor handling per request, no network, no model (median microseconds).

    protobuf: what ModelInfer did before (parse, read raw_input_contents, tobytes, append,
    serialize); lean: `serving/rpc/kserve_wire.py`; shm: lease the input region, view it,
    write the output into its region.
    """
    data = loadgen.infer_request(model.name, "images", model.tensor)
    dims, shape = list(output.shape), model.tensor.shape

    def protobuf() -> bytes:
        request = pb.ModelInferRequest.FromString(data)
        np.frombuffer(request.raw_input_contents[0], np.float32).reshape(shape)
        response = pb.ModelInferResponse(model_name=model.name, model_version="1")
        response.outputs.add(name="logits", datatype="FP32", shape=dims)
        response.raw_output_contents.append(output.tobytes())
        return response.SerializeToString()

    def lean() -> bytes:
        call = split_request(data)
        np.frombuffer(call.raw[0], np.float32).reshape(shape)
        reply = InferReply(pb.ModelInferResponse(model_name=model.name, model_version="1"))
        reply.response.outputs.add(name="logits", datatype="FP32", shape=dims)
        reply.raw.append(output)
        return serialize_reply(reply)

    registry, tag = SharedMemoryRegistry(), uuid.uuid4().hex[:10]
    block = shared_memory.SharedMemory(
        name=f"bench-codec-{tag}", create=True, size=model.tensor.nbytes + output.nbytes
    )
    registry.register("in", f"/{block.name}", 0, model.tensor.nbytes)
    registry.register("out", f"/{block.name}", model.tensor.nbytes, output.nbytes)
    in_ref, out_ref = TensorRef("in", 0, model.tensor.nbytes), TensorRef("out", 0, output.nbytes)

    def shm() -> None:
        with registry.lease(in_ref) as view:
            np.frombuffer(view, np.float32).reshape(shape)
        write_to_region("logits", output, out_ref, registry)

    try:
        return {
            "protobuf_us": _median_us(protobuf),
            "lean_us": _median_us(lean),
            "shm_us": _median_us(shm),
        }
    finally:
        registry.close()
        block.close()
        block.unlink()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=9.0, help="seconds per path and load")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per path")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated worker counts")
    parser.add_argument("--seg-width", type=int, default=16, help="seg256 conv channels")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where the figures go")
    parser.add_argument("--paired-calls", type=int, default=200, help="paired-overhead requests")
    parser.add_argument(
        "--profile", type=float, default=0.0, help="then S seconds of py-spy on the server"
    )
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.rounds = max(1, args.rounds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command_line = "python -m bench.shm " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = os.getloadavg()
    print(
        f"bench.shm: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in load_before)}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-shm-") as tmp_name:
        tmp = Path(tmp_name)
        seg = write_repository(tmp / "models", 0.0, args.seg_width)[0]
        port = free_port()
        command = [sys.executable, "-m", "app", "serve", "--models", str(tmp / "models")]
        command += ["--host", HOST, "--grpc-port", str(port), "--http-port", "-1"]
        command += ["--log-level", "WARNING"]
        with server_process("ours", command, port, [seg.name], tmp / "ours.log") as ours:
            rows = measure(seg, ours.address, args)
            paired = paired_paths(seg, ours.address, args.paired_calls)
            breakdown = profiled(seg, ours, args.profile) if args.profile > 0 else ""
        codec = codec_costs(seg, session_call(seg)()[0])
    print_table(rows, "seg256: in-process vs gRPC bytes vs shared memory (interleaved)")
    figures = ratios(rows)
    print_ratios(figures)
    floor = [r.result.percentile_ms(50) for r in rows if r.path == FLOOR]
    if floor:
        print(f"gRPC floor: an empty ServerLive round trip, p50 {floor[0]:.3f} ms (same run)")
    for path, figure in paired.items():
        print(
            f"paired c=1 {path}: client {figure['client_ms']:.3f} ms - server compute "
            f"{figure['compute_ms']:.3f} ms = added {figure['added_ms']:+.3f} ms (means of "
            f"{args.paired_calls} requests): {figure['in_server_ms']:.3f} ms in the data plane "
            f"besides compute, {figure['outside_ms']:.3f} ms outside it (client, gRPC, codec)"
        )
    if breakdown:
        print(breakdown)
    print(
        f"tensor handling in the server per request (median of {CODEC_CALLS}, no network): "
        f"protobuf {codec['protobuf_us']:.0f} us, lean {codec['lean_us']:.0f} us "
        f"({codec['lean_us'] / codec['protobuf_us']:.2f}x), shared memory {codec['shm_us']:.0f} us"
    )
    record = {
        "command": command_line.strip(),
        "cpus": os.cpu_count(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "rows": [
            {
                "path": r.path,
                "concurrency": r.concurrency,
                "requests": r.result.requests,
                "throughput": r.result.throughput,
                "p50_ms": r.result.percentile_ms(50),
                "p99_ms": r.result.percentile_ms(99),
                "errors": r.result.errors,
            }
            for r in rows
        ],
        "ratios": figures,
        "codec_us": codec,
        "paired_c1": paired,
        "profile": breakdown,
        "goals": GOALS,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {args.json} ({command_line.strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
