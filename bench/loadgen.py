"""A closed-loop load generator: N workers, each sending its next request when the last returns.

Requests are serialized once up front and sent as raw bytes (no per-call protobuf work in the
client), so the same generator drives any server speaking the wire protocol, ours or another.
Loopback only. As a command, drives a KServe v2 server with zeros of the given shape:

    python -m bench.loadgen --target 127.0.0.1:8001 --model tiny --shape 1,3,32,32 -c 4 -d 5
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from protos.inference import grpc_service_pb2 as kserve_pb
from protos.vision.v1 import vision_pb2 as vision_pb

Call = Callable[[], object]
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SERVER_READY = "/inference.GRPCInferenceService/ServerReady"
MODEL_READY = "/inference.GRPCInferenceService/ModelReady"
SEGMENT = "/vision.v1.VisionService/Segment"
MODEL_STATISTICS = "/inference.GRPCInferenceService/ModelStatistics"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CALL_TIMEOUT_S = 30.0
MAX_ERRORS = 20


@dataclass
class LoadResult:
    """Latencies of the requests that succeeded, over `elapsed_s` seconds of load."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    errors: int = 0
    first_error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1000.0 if self.latencies_s else 0.0

    def merge(self, other: LoadResult) -> LoadResult:
        """Pool two runs of the same path (interleaved rounds)."""
        return LoadResult(
            self.concurrency,
            self.latencies_s + other.latencies_s,
            self.elapsed_s + other.elapsed_s,
            self.errors + other.errors,
            self.first_error or other.first_error,
        )

    def summary(self) -> str:
        return (
            f"{self.requests} requests, {self.throughput:.1f} req/s, p50 "
            f"{self.percentile_ms(50):.2f} ms, p99 {self.percentile_ms(99):.2f} ms, "
            f"{self.errors} errors"
        )


def closed_loop(
    calls: Sequence[Call], duration_s: float, max_requests: int | None = None
) -> LoadResult:
    """Run one worker thread per call for `duration_s` (or until `max_requests` in all)."""
    result = LoadResult(len(calls))
    lock = threading.Lock()
    barrier = threading.Barrier(len(calls) + 1)
    stop = threading.Event()
    counted = [0]

    def worker(call: Call) -> None:
        latencies: list[float] = []
        barrier.wait()
        while not stop.is_set():
            start = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - count and report, never hang the run
                with lock:
                    result.errors += 1
                    result.first_error = result.first_error or repr(exc)[:300]
                    if result.errors >= MAX_ERRORS:
                        stop.set()
                continue
            latencies.append(time.perf_counter() - start)
            if max_requests is not None:
                with lock:
                    counted[0] += 1
                    if counted[0] >= max_requests:
                        stop.set()
        with lock:
            result.latencies_s.extend(latencies)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in calls]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    stop.wait(duration_s)
    stop.set()
    for thread in threads:
        thread.join(CALL_TIMEOUT_S + 5.0)
    result.elapsed_s = time.perf_counter() - started
    return result


def check_loopback(address: str) -> str:
    """`address` if its host is a loopback one, else ValueError."""
    host = address.rsplit(":", 1)[0]
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"{address}: the benchmark only talks to loopback ({LOOPBACK_HOSTS})")
    return address


def open_channel(address: str) -> grpc.Channel:
    """A channel with its own connection (no subchannel sharing between workers)."""
    return grpc.insecure_channel(
        check_loopback(address),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


def unary(channel: grpc.Channel, method: str, payload: bytes) -> Call:
    """A call sending pre-serialized `payload` and returning the response bytes unparsed."""
    rpc = channel.unary_unary(method)
    return lambda: rpc(payload, timeout=CALL_TIMEOUT_S)


def infer_request(model: str, input_name: str, array: np.ndarray) -> bytes:
    """A serialized KServe v2 ModelInferRequest carrying `array` as raw_input_contents."""
    request = kserve_pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP32", shape=list(array.shape))
    request.raw_input_contents.append(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return request.SerializeToString()


def segment_request(model: str, png: bytes) -> bytes:
    """A serialized vision.v1 SegmentRequest with PNG masks."""
    return vision_pb.SegmentRequest(
        model=vision_pb.ModelRef(name=model),
        image=vision_pb.ImageInput(encoded=png),
        mask_encoding=vision_pb.MASK_ENCODING_PNG,
    ).SerializeToString()


def check_infer_response(data: bytes, expected_outputs: int = 1) -> None:
    """Raise unless `data` parses as a ModelInferResponse with raw or typed outputs."""
    response = kserve_pb.ModelInferResponse.FromString(data)
    if len(response.outputs) < expected_outputs:
        raise RuntimeError(f"infer response has {len(response.outputs)} outputs: {response}")


def is_ready(address: str, model: str = "", timeout_s: float = 1.0) -> bool:
    """ServerReady (and ModelReady for `model`) answered true; False on any error."""
    with open_channel(address) as channel:
        try:
            data = channel.unary_unary(SERVER_READY)(
                kserve_pb.ServerReadyRequest().SerializeToString(), timeout=timeout_s
            )
            if not kserve_pb.ServerReadyResponse.FromString(data).ready:
                return False
            if not model:
                return True
            data = channel.unary_unary(MODEL_READY)(
                kserve_pb.ModelReadyRequest(name=model).SerializeToString(), timeout=timeout_s
            )
            return kserve_pb.ModelReadyResponse.FromString(data).ready
        except grpc.RpcError:
            return False


def infer_calls(address: str, model: str, input_name: str, array: np.ndarray, n: int) -> list:
    """`n` ModelInfer calls, each on its own connection."""
    payload = infer_request(model, input_name, array)
    return [unary(open_channel(address), MODEL_INFER, payload) for _ in range(n)]


def segment_calls(address: str, model: str, png: bytes, n: int) -> list[Call]:
    """`n` Segment calls, each on its own connection; the first response is checked."""
    payload = segment_request(model, png)
    calls = [unary(open_channel(address), SEGMENT, payload) for _ in range(n)]
    response = vision_pb.SegmentResponse.FromString(calls[0]())
    if response.model_name != model:
        raise RuntimeError(f"unexpected Segment response: {response}")
    return calls


def _timed(call: Call, n: int) -> tuple[list[float], list[bytes]]:
    latencies, responses = [], []
    for _ in range(n):
        start = time.perf_counter()
        responses.append(call())
        latencies.append((time.perf_counter() - start) * 1000.0)
    return latencies, responses


def segment_breakdown(address: str, model: str, png: bytes, n: int = 25) -> str:
    """Median server stage times (Segment timings) of `n` sequential calls vs the client's."""
    latencies, responses = _timed(segment_calls(address, model, png, 1)[0], n)
    timings = [vision_pb.SegmentResponse.FromString(r).timings for r in responses]
    stages = ("decode_ms", "preprocess_ms", "queue_ms", "inference_ms", "postprocess_ms")
    median = {k: statistics.median(getattr(t, k) for t in timings) for k in (*stages, "total_ms")}
    parts = ", ".join(f"{k.removesuffix('_ms')} {median[k]:.2f}" for k in stages)
    return (
        f"{model} Segment c=1, medians of {n} calls (ms): {parts}; server total "
        f"{median['total_ms']:.2f}; client-observed {statistics.median(latencies):.2f}"
    )


def _statistics(channel: grpc.Channel, model: str) -> kserve_pb.InferStatistics:
    request = kserve_pb.ModelStatisticsRequest(name=model).SerializeToString()
    data = channel.unary_unary(MODEL_STATISTICS)(request, timeout=CALL_TIMEOUT_S)
    return kserve_pb.ModelStatisticsResponse.FromString(data).model_stats[0].inference_stats


def _model_statistics(channel: grpc.Channel, model: str) -> kserve_pb.ModelStatistics:
    request = kserve_pb.ModelStatisticsRequest(name=model).SerializeToString()
    data = channel.unary_unary(MODEL_STATISTICS)(request, timeout=CALL_TIMEOUT_S)
    return kserve_pb.ModelStatisticsResponse.FromString(data).model_stats[0]


def _batches(stats: kserve_pb.ModelStatistics) -> dict[int, tuple[int, int]]:
    """Batch size -> (batches run, compute_infer ns) from the server's batch statistics."""
    return {b.batch_size: (b.compute_infer.count, b.compute_infer.ns) for b in stats.batch_stats}


def kserve_load_breakdown(
    address: str, model: str, array: np.ndarray, concurrency: int, seconds: float = 2.0
) -> str:
    """Under a closed loop of `concurrency` ModelInfer callers: where a request's time goes.

    Means per request of the server's queue, compute and request time against the client's
    p50, and the batches the server formed (mean size, compute per batch), from ModelStatistics.
    """
    calls = infer_calls(address, model, "images", array, concurrency)
    with open_channel(address) as channel:
        before = _model_statistics(channel, model)
        load = closed_loop(calls, seconds)
        after = _model_statistics(channel, model)
    old, new = before.inference_stats, after.inference_stats
    requests = max(1, new.success.count - old.success.count)

    def per_request_ms(name: str) -> float:
        return (getattr(new, name).ns - getattr(old, name).ns) / requests / 1e6

    earlier = _batches(before)
    runs = {
        size: (count - earlier.get(size, (0, 0))[0], ns - earlier.get(size, (0, 0))[1])
        for size, (count, ns) in _batches(after).items()
    }
    batches = sum(count for count, _ in runs.values())
    rows = sum(size * count for size, (count, _) in runs.items())
    batch_ms = sum(ns for _, ns in runs.values()) / max(1, batches) / 1e6
    return (
        f"{model} ModelInfer c={concurrency}, {requests} requests (ms per request): queue "
        f"{per_request_ms('queue'):.2f}, compute {per_request_ms('compute_infer'):.2f}, server "
        f"request {per_request_ms('success'):.2f}; client p50 {load.percentile_ms(50):.2f}; "
        f"{batches} batches, mean size {rows / max(1, batches):.2f}, compute {batch_ms:.2f} ms "
        f"per batch"
    )


def kserve_breakdown(address: str, model: str, array: np.ndarray, n: int = 25) -> str:
    """Means over `n` sequential ModelInfer calls: client-observed vs the server's statistics."""
    call = infer_calls(address, model, "images", array, 1)[0]
    with open_channel(address) as channel:
        before = _statistics(channel, model)
        latencies, _ = _timed(call, n)
        after = _statistics(channel, model)

    def mean_ms(name: str) -> float:
        old, new = getattr(before, name), getattr(after, name)
        return (new.ns - old.ns) / max(1, new.count - old.count) / 1e6

    client, server = statistics.fmean(latencies), mean_ms("success")
    return (
        f"{model} ModelInfer c=1, means of {n} calls (ms): queue {mean_ms('queue'):.2f}, "
        f"compute {mean_ms('compute_infer'):.2f}, server request {server:.2f}; client-observed "
        f"{client:.2f} (p50 {statistics.median(latencies):.2f}); outside the data plane "
        f"{client - server:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:8001")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", default="images")
    parser.add_argument("--shape", default="1,3,32,32")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("-n", "--requests", type=int, default=None)
    args = parser.parse_args(argv)
    array = np.zeros([int(d) for d in args.shape.split(",")], dtype=np.float32)
    calls = infer_calls(args.target, args.model, args.input, array, args.concurrency)
    check_infer_response(calls[0]())
    print(closed_loop(calls, args.duration, args.requests).summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
