"""KServe gRPC ModelInfer on a real loopback server: refused before its message is read.

ModelInfer is registered stream-unary, so the server decides before gRPC hands it the message:
with every intake place held (one model: its admission places), a call is refused
RESOURCE_EXHAUSTED with the retry trailer, and the request deserializer never ran for it.
Unary clients (the generated stub here; tritonclient in tests/tritonclient_suite) are served as
before, and authentication still comes first.
"""

from __future__ import annotations

import concurrent.futures
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from protos.inference import grpc_service_pb2 as kserve_pb
from protos.inference import grpc_service_pb2_grpc as kserve_grpc
from serving.admission import (
    OTHER,
    READING,
    Admission,
    Intake,
    OverloadedError,
    ShuttingDownError,
)
from serving.rpc import kserve_wire
from tests.faults.helpers import HeldRuns, admitted, sample, wait_for, wrap_session
from tests.serving.conftest import ServerThread, start_server
from tests.serving.tiny_models import brightness_segmenter, segmenter_config, write_config
from vision.errors import DeadlineExceededError

PLACES = 3  # max_queue_size 2 + max_batch_size 1: the intake's limit with this one model
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
PUSHBACK = "grpc-retry-pushback-ms"
TOKEN = "intake-test-token"


class CountingReads:
    """Stands in for the lean ModelInfer deserializer, counting the messages it parsed and
    keeping a weak reference to each one's raw tensor views (alive while anything still holds
    the received bytes: the call, its tensors, their batch)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.views: list[weakref.ref] = []
        self._parse: Callable = kserve_wire.split_request

    def __call__(self, data: bytes) -> kserve_wire.InferCall:
        call = self._parse(data)
        with self._lock:
            self.count += 1
            self.views += [weakref.ref(view) for view in call.raw]
        return call

    def alive(self) -> int:
        """Messages parsed whose raw tensor views are still referenced."""
        with self._lock:
            return sum(ref() is not None for ref in self.views)


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> CountingReads:
    counter = CountingReads()
    monkeypatch.setattr(kserve_wire, "split_request", counter)  # add_kserve_servicer reads it
    return counter


def _one_model(root: Path) -> Path:
    write_config(segmenter_config("tight", max_batch_size=1, max_queue_size=2), root / "tight")
    brightness_segmenter(root / "tight" / "1" / "model.onnx")
    return root


def _server(root: Path, **overrides: object) -> Iterator[ServerThread]:
    running = start_server(_one_model(root), **overrides)
    yield running
    running.stop()


@pytest.fixture()
def server(tmp_path: Path, reads: CountingReads) -> Iterator[ServerThread]:
    yield from _server(tmp_path / "models")


@pytest.fixture()
def signed_server(tmp_path: Path, reads: CountingReads) -> Iterator[ServerThread]:
    yield from _server(tmp_path / "models", api_key=TOKEN)


def _request() -> kserve_pb.ModelInferRequest:
    tensor = kserve_pb.ModelInferRequest.InferInputTensor(
        name="images", datatype="FP32", shape=[1, 3, 64, 64]
    )
    raw = np.zeros((1, 3, 64, 64), np.float32).tobytes()
    return kserve_pb.ModelInferRequest(
        model_name="tight", inputs=[tensor], raw_input_contents=[raw]
    )


def _refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _trailer(error: grpc.RpcError, key: str) -> str | None:
    return dict(error.trailing_metadata() or ()).get(key)


def _unread_refusals(server: ServerThread) -> float:
    labels = {"api": "infer", "model": "", "version": "", "error": "OverloadedError"}
    return sample(server, "vision_request_failures_total", **labels)


def _fill(
    stub: kserve_grpc.GRPCInferenceServiceStub,
    server: ServerThread,
    pool: concurrent.futures.Executor,
    metadata: tuple = (),
) -> list[concurrent.futures.Future]:
    """Every place of the held model taken by a ModelInfer that is waiting for its run."""
    calls = [
        pool.submit(stub.ModelInfer, _request(), timeout=60, metadata=metadata)
        for _ in range(PLACES)
    ]
    wait_for(lambda: admitted(server, "tight") == PLACES, "a full gate")
    return calls


def test_a_full_intake_refuses_before_the_message_is_read(server, reads):
    with grpc.insecure_channel(server.address) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(_request(), timeout=60).outputs  # a unary client is served
        held = HeldRuns(server, "tight")
        try:
            with concurrent.futures.ThreadPoolExecutor(PLACES) as pool:
                calls = _fill(stub, server, pool)
                before = reads.count
                error = _refusal(lambda: stub.ModelInfer(_request(), timeout=60))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "retry after" in error.details()
                assert int(_trailer(error, PUSHBACK)) >= 10
                # Bytes no parser could take: refused for capacity, so never parsed.
                garbage = channel.unary_unary(MODEL_INFER)
                error = _refusal(lambda: garbage(b"\xff not a ModelInferRequest", timeout=60))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert reads.count == before
                held.release()
                assert all(call.result(timeout=60).outputs for call in calls)
        finally:
            held.release()
        wait_for(lambda: admitted(server, "tight") == 0, "every place back")
        assert stub.ModelInfer(_request(), timeout=60).outputs  # recovered at once
    assert _unread_refusals(server) == 2


def test_an_undecodable_message_read_below_the_limit_is_invalid(server):
    with grpc.insecure_channel(server.address) as channel:
        garbage = channel.unary_unary(MODEL_INFER)
        error = _refusal(lambda: garbage(b"\xff not a ModelInferRequest", timeout=60))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture()
def no_cycle_collector() -> Iterator[None]:
    """The cyclic garbage collector off: what is still referenced only from a reference cycle
    stays alive, as it does on a busy server until the collector's next full pass."""
    gc.disable()
    yield
    gc.enable()


def test_an_answered_calls_message_is_freed_without_the_cycle_collector(
    server, reads, no_cycle_collector
):
    with grpc.insecure_channel(server.address) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        with concurrent.futures.ThreadPoolExecutor(PLACES) as pool:
            calls = [pool.submit(stub.ModelInfer, _request(), timeout=60) for _ in range(6)]
            assert all(call.result(timeout=60).outputs for call in calls)
    assert reads.count == 6
    # grpc.aio's request iterator would keep each message until a full collection.
    wait_for(lambda: reads.alive() == 0, "every answered call's message freed", 30.0)


def test_a_deadline_no_model_can_meet_is_refused_unread(server, reads):
    restore = wrap_session(server, "tight", lambda: time.sleep(1.0))  # 1 s a run
    try:
        with (
            grpc.insecure_channel(server.address) as channel,
            concurrent.futures.ThreadPoolExecutor(2) as pool,
        ):
            stub = kserve_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelInfer(_request(), timeout=60).outputs  # measured once
            calls = [pool.submit(stub.ModelInfer, _request(), timeout=60) for _ in range(2)]
            wait_for(lambda: admitted(server, "tight") == 2, "two requests ahead")
            before = reads.count
            # One runs, one waits: an answer needs about 3 s; this call allows 1.5 s.
            error = _refusal(lambda: stub.ModelInfer(_request(), timeout=1.5))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "deadline leaves" in error.details()
            assert _trailer(error, PUSHBACK) is not None
            assert reads.count == before
            assert all(call.result(timeout=60).outputs for call in calls)
    finally:
        restore()


def test_authentication_comes_before_the_intake_and_the_read(signed_server, reads):
    bearer = (("authorization", f"Bearer {TOKEN}"),)
    with grpc.insecure_channel(signed_server.address) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        error = _refusal(lambda: stub.ModelInfer(_request(), timeout=60))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reads.count == 0
        held = HeldRuns(signed_server, "tight")
        try:
            with concurrent.futures.ThreadPoolExecutor(PLACES) as pool:
                calls = _fill(stub, signed_server, pool, bearer)
                error = _refusal(lambda: stub.ModelInfer(_request(), timeout=60))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # not told it is full
                error = _refusal(lambda: stub.ModelInfer(_request(), timeout=60, metadata=bearer))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert reads.count == PLACES
                held.release()
                assert all(call.result(timeout=60).outputs for call in calls)
        finally:
            held.release()


def test_a_fixed_intake_limit_counts_calls_until_they_are_released():
    admission = Admission()
    intake = Intake(admission, lambda: [], limit=2)
    intake.take(None)
    intake.take(time.monotonic() + 60)
    with pytest.raises(OverloadedError) as info:
        intake.take(None)
    assert info.value.retry_after_ms == 10  # no model serving: the smallest hint
    intake.release()
    intake.take(None)
    assert intake.held == 2
    with pytest.raises(DeadlineExceededError):  # before the places: an expired call is dropped
        intake.take(time.monotonic() - 1)
    admission.begin_shutdown()
    intake.release()
    with pytest.raises(ShuttingDownError):
        intake.take(None)


def _serving(name: str) -> SimpleNamespace:
    """Stands in for a ModelVersion that serves (what the intake reads of one)."""
    return SimpleNamespace(name=name, batcher=SimpleNamespace(compute_estimate_s=0.0))


def test_the_intake_says_which_models_hold_its_places():
    intake = Intake(Admission(), lambda: [_serving("a"), _serving("b")], 4)
    for _ in range(4):
        intake.take(None)
    keys = [intake.assign("a"), intake.assign("a"), intake.assign("made-up")]
    assert keys == ["a", "a", OTHER]  # a name no model serves is not repeated to others
    assert intake.holders() == {"a": 2, OTHER: 1, READING: 1}
    with pytest.raises(OverloadedError) as info:
        intake.take(None)
    assert f"4 of 4 inference calls held: a 2, {OTHER} 1, {READING} 1" in str(info.value)
    for key in [*keys, None]:
        intake.release(key)
    assert (intake.held, intake.holders()) == (0, {})


@pytest.fixture()
def shared_server(tmp_path: Path, reads: CountingReads) -> Iterator[ServerThread]:
    """The held model and a second one with room, behind a fixed intake of PLACES calls."""
    root = _one_model(tmp_path / "models")
    write_config(segmenter_config("roomy", max_batch_size=1, max_queue_size=8), root / "roomy")
    brightness_segmenter(root / "roomy" / "1" / "model.onnx")
    running = start_server(root, kserve_intake=PLACES)
    yield running
    running.stop()


def test_one_models_calls_can_hold_the_intake_from_another_and_the_refusal_says_so(
    shared_server, reads
):
    roomy = _request()
    roomy.model_name = "roomy"
    with grpc.insecure_channel(shared_server.address) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        held = HeldRuns(shared_server, "tight")
        try:
            with concurrent.futures.ThreadPoolExecutor(PLACES) as pool:
                calls = _fill(stub, shared_server, pool)
                before = reads.count
                error = _refusal(lambda: stub.ModelInfer(roomy, timeout=60))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                held_by = f"{PLACES} of {PLACES} inference calls held: tight {PLACES}"
                assert held_by in error.details()
                assert reads.count == before  # refused unread, though its own gate had room
                assert admitted(shared_server, "roomy") == 0
                held.release()
                assert all(call.result(timeout=60).outputs for call in calls)
        finally:
            held.release()
        assert stub.ModelInfer(roomy, timeout=60).outputs


@pytest.fixture()
def narrow_server(tmp_path: Path, reads: CountingReads) -> Iterator[ServerThread]:
    """`vision serve --kserve-intake 1 --grpc-stream-window 65536` as settings."""
    yield from _server(tmp_path / "models", kserve_intake=1, grpc_stream_window_bytes=65536)


def test_the_configured_intake_and_window_reach_the_server(narrow_server, reads):
    big = np.zeros((1, 3, 256, 256), np.float32)  # 786 KiB: many windows of 64 KiB
    request = _request()
    request.inputs[0].shape[:] = list(big.shape)
    request.raw_input_contents[0] = big.tobytes()
    with grpc.insecure_channel(narrow_server.address) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(request, timeout=60).outputs  # a held window still carries it
        held = HeldRuns(narrow_server, "tight")
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                call = pool.submit(stub.ModelInfer, _request(), timeout=60)
                wait_for(lambda: admitted(narrow_server, "tight") == 1, "one call in")
                error = _refusal(lambda: stub.ModelInfer(_request(), timeout=60))
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the model had room
                assert reads.count == 2
                held.release()
                assert call.result(timeout=60).outputs
        finally:
            held.release()


def test_serve_flags_set_the_intake_and_the_window():
    from app.commands.serve import build_parser, config_from

    args = build_parser().parse_args(["--kserve-intake", "4", "--grpc-stream-window", "262144"])
    config = config_from(args)
    assert (config.kserve_intake, config.grpc_stream_window_bytes) == (4, 262144)
    assert build_parser().parse_args([]).kserve_intake == 0  # default: the models' places


def test_a_call_lists_the_serving_models_once():
    """`take` lists the serving versions and hands their names to `assign`: one listing per
    call on the hot path, and the place is labelled by what served when it was taken."""
    listings = []

    def versions():
        listings.append(1)
        return [_serving("a")]

    intake = Intake(Admission(), versions, 2)
    serving = intake.take(None)
    assert serving == {"a"} and len(listings) == 1
    assert intake.assign("a", serving) == "a" and len(listings) == 1
    assert intake.assign("b", serving) == OTHER
    intake.release("a")
    intake.release(OTHER)
