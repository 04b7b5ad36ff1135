"""protos/inference/grpc_service.proto must be wire compatible with Triton's gRPC API.

The reference is the generated code that ships inside tritonclient.grpc: our server has
to work with that client unmodified.

Why everything below runs in subprocesses or private descriptor pools: our module and
tritonclient's both define the protobuf package `inference`, and protobuf's default
descriptor pool refuses the same full name (e.g. `inference.ModelInferRequest`) coming
from two different files. So `protos.inference.grpc_service_pb2` and `tritonclient.grpc`
can never be imported into the same Python process -- including this pytest process,
where importing either one would break other tests that import the other. Descriptors
are therefore dumped by a subprocess and loaded into private pools here, and the
end-to-end test runs the server and the tritonclient client in separate processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

REPO_ROOT = Path(__file__).resolve().parents[2]

OURS_MODULE = "protos.inference.grpc_service_pb2"
OURS_FILE = "protos/inference/grpc_service.proto"
TRITON_MODULE = "tritonclient.grpc.service_pb2"
SERVICE = "inference.GRPCInferenceService"

# The RPCs this server's API defines. Everything else in Triton's service (ModelConfig,
# CUDA shared memory, trace and log settings) is deliberately absent.
IMPLEMENTED_METHODS = {
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
}

# Fields of Triton messages that we define too but deliberately leave out. Each must be
# reserved in our message so that its number can never be reused with another meaning.
OMITTED_FIELDS = {
    ("inference.ModelStatistics", "memory_usage"),
    ("inference.ModelStatistics", "response_stats"),
}

_DUMP_DESCRIPTORS = textwrap.dedent(
    """
    import importlib, sys
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    seen = set()

    def add(fd):  # dependencies first, so the set loads into a fresh pool in order
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fd.CopyToProto(fds.file.add())

    add(importlib.import_module(sys.argv[1]).DESCRIPTOR)
    sys.stdout.buffer.write(fds.SerializeToString())
    """
)


def _require_tritonclient() -> None:
    """Skip without tritonclient, without importing it (it would clash with our protos)."""
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient[grpc] is a dev dependency")


def _python(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def _load(module: str) -> tuple[descriptor_pool.DescriptorPool, descriptor_pb2.FileDescriptorSet]:
    """Import `module` in a subprocess; return its file descriptors in a private pool."""
    result = _python("-c", _DUMP_DESCRIPTORS, module)
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr.decode()}"
    fds = descriptor_pb2.FileDescriptorSet.FromString(result.stdout)
    pool = descriptor_pool.DescriptorPool()
    for file_proto in fds.file:
        pool.Add(file_proto)
    return pool, fds


@pytest.fixture(scope="module")
def ours():
    pool, fds = _load(OURS_MODULE)
    (file_proto,) = [f for f in fds.file if f.name == OURS_FILE]
    return pool, file_proto


@pytest.fixture(scope="module")
def triton():
    _require_tritonclient()
    pool, fds = _load(TRITON_MODULE)
    (file_proto,) = [f for f in fds.file if f.name == "grpc_service.proto"]
    return pool, file_proto


def _messages(
    file_proto: descriptor_pb2.FileDescriptorProto,
) -> dict[str, descriptor_pb2.DescriptorProto]:
    """Every message in the file, nested ones (map entries included), by full name."""
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs) -> None:
        for msg in msgs:
            full = f"{prefix}.{msg.name}"
            out[full] = msg
            walk(full, msg.nested_type)

    walk(file_proto.package, file_proto.message_type)
    return out


def _field_signature(msg: descriptor_pb2.DescriptorProto, field) -> dict:
    """Everything about a field that decides its encoding or its meaning to a peer."""
    return {
        "name": field.name,
        "number": field.number,
        "label": descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
        "type": descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
        "type_name": field.type_name,
        "oneof": msg.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None,
        "proto3_optional": field.proto3_optional,
        "packed": field.options.packed if field.options.HasField("packed") else None,
        "default_value": field.default_value,
    }


# --------------------------------------------------------------------------------------
# Descriptor comparison
# --------------------------------------------------------------------------------------


def test_file_package_and_syntax(ours):
    _, file_proto = ours
    assert file_proto.package == "inference"
    assert file_proto.syntax == "proto3"
    assert list(file_proto.dependency) == [], "must not depend on Triton's model_config.proto"


def test_every_message_exists_in_triton(ours, triton):
    extra = sorted(set(_messages(ours[1])) - set(_messages(triton[1])))
    assert not extra, f"messages Triton does not define (not wire checkable): {extra}"


def test_fields_match_triton(ours, triton):
    our_msgs, their_msgs = _messages(ours[1]), _messages(triton[1])
    mismatches = []
    for full_name, our_msg in sorted(our_msgs.items()):
        their_msg = their_msgs[full_name]
        if our_msg.options.map_entry != their_msg.options.map_entry:
            mismatches.append(f"{full_name}: map_entry differs")
        theirs_by_number = {f.number: f for f in their_msg.field}
        for field in our_msg.field:
            their_field = theirs_by_number.get(field.number)
            if their_field is None:
                mismatches.append(f"{full_name}.{field.name} (#{field.number}): not in Triton")
                continue
            mine = _field_signature(our_msg, field)
            theirs = _field_signature(their_msg, their_field)
            if mine != theirs:
                diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
                mismatches.append(f"{full_name}.{field.name}: (ours, triton) {diff}")
    assert not mismatches, "\n".join(mismatches)


def test_triton_fields_missing_from_ours_are_deliberate_and_reserved(ours, triton):
    our_msgs, their_msgs = _messages(ours[1]), _messages(triton[1])
    missing = set()
    for full_name, our_msg in our_msgs.items():
        our_numbers = {f.number for f in our_msg.field}
        for their_field in their_msgs[full_name].field:
            if their_field.number not in our_numbers:
                missing.add((full_name, their_field.name))
                reserved = any(
                    r.start <= their_field.number < r.end for r in our_msg.reserved_range
                )
                assert reserved, f"{full_name}.{their_field.name} omitted but not reserved"
    assert missing == OMITTED_FIELDS, (
        f"unexpected omissions: {sorted(missing - OMITTED_FIELDS)}; "
        f"no longer omitted (update OMITTED_FIELDS): {sorted(OMITTED_FIELDS - missing)}"
    )


def test_service_methods_match_triton(ours, triton):
    (our_service,) = ours[1].service
    (their_service,) = triton[1].service
    assert f"{ours[1].package}.{our_service.name}" == SERVICE
    theirs = {m.name: m for m in their_service.method}
    assert {m.name for m in our_service.method} == IMPLEMENTED_METHODS
    for method in our_service.method:
        their = theirs[method.name]
        assert (
            method.input_type,
            method.output_type,
            method.client_streaming,
            method.server_streaming,
        ) == (
            their.input_type,
            their.output_type,
            their.client_streaming,
            their.server_streaming,
        ), method.name


# --------------------------------------------------------------------------------------
# Bytes: every shared message, fully populated by Triton's schema, parses losslessly
# --------------------------------------------------------------------------------------


def _fill(msg, depth: int = 0, skip: frozenset = frozenset()) -> None:
    """Set every field of `msg` (the last member wins in a oneof) to a non-default value.

    Recurses into sub-messages; fields named in `skip` as (message, field) stay unset.
    """
    fd = descriptor_pb2.FieldDescriptorProto
    scalars = {
        fd.TYPE_BOOL: True,
        fd.TYPE_STRING: "s\u00e9",
        fd.TYPE_BYTES: b"\x00\xff",
        fd.TYPE_FLOAT: 1.5,
        fd.TYPE_DOUBLE: -2.25,
        fd.TYPE_INT32: -7,
        fd.TYPE_INT64: -(2**40),
        fd.TYPE_UINT32: 7,
        fd.TYPE_UINT64: 2**63 + 1,
    }
    for field in msg.DESCRIPTOR.fields:
        if (msg.DESCRIPTOR.full_name, field.name) in skip:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            container = getattr(msg, field.name)
            if value_field.message_type is not None:
                if depth < 4:
                    _fill(container["k"], depth + 1, skip)
            else:
                container["k"] = scalars[value_field.type]
        elif field.message_type is not None:
            if depth >= 4:
                continue
            if field.is_repeated:
                _fill(getattr(msg, field.name).add(), depth + 1, skip)
            else:
                _fill(getattr(msg, field.name), depth + 1, skip)
        elif field.is_repeated:
            getattr(msg, field.name).extend([scalars[field.type]] * 2)
        else:
            setattr(msg, field.name, scalars[field.type])


def test_triton_encoded_messages_parse_losslessly(ours, triton):
    our_pool, their_pool = ours[0], triton[0]
    checked = 0
    for full_name, msg_proto in _messages(ours[1]).items():
        if msg_proto.options.map_entry:
            continue
        their_cls = message_factory.GetMessageClass(their_pool.FindMessageTypeByName(full_name))
        our_cls = message_factory.GetMessageClass(our_pool.FindMessageTypeByName(full_name))
        sent = their_cls()
        _fill(sent, skip=frozenset(OMITTED_FIELDS))
        received = our_cls.FromString(sent.SerializeToString(deterministic=True))
        # MessageToDict drops unknown fields: equality means nothing was misread or lost.
        as_dict = json_format.MessageToDict
        assert as_dict(received) == as_dict(sent), full_name
        echoed = their_cls.FromString(received.SerializeToString(deterministic=True))
        assert echoed == sent, full_name  # and the client parses what the server sends

        # Fields we omit arrive as unknown fields: tolerated, and passed through intact.
        full = their_cls()
        _fill(full)
        relayed = our_cls.FromString(full.SerializeToString(deterministic=True))
        assert their_cls.FromString(relayed.SerializeToString()) == full, full_name
        checked += 1
    assert checked >= 30


# --------------------------------------------------------------------------------------
# End to end: unmodified tritonclient against a server built on our generated code
# --------------------------------------------------------------------------------------

_SERVER = textwrap.dedent(
    """
    import sys
    import time
    from concurrent import futures

    import grpc
    import numpy as np

    from protos.inference import grpc_service_pb2 as pb
    from protos.inference import grpc_service_pb2_grpc as pb_grpc

    MODEL = "double"


    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        loaded = []
        unloaded = []

        def ServerLive(self, request, context):
            return pb.ServerLiveResponse(live=True)

        def ServerReady(self, request, context):
            return pb.ServerReadyResponse(ready=True)

        def ModelReady(self, request, context):
            return pb.ModelReadyResponse(ready=request.name == MODEL)

        def ServerMetadata(self, request, context):
            return pb.ServerMetadataResponse(
                name="vision-serving", version="0.1.0", extensions=["model_repository"]
            )

        def ModelMetadata(self, request, context):
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=MODEL,
                versions=["1"],
                platform="onnxruntime_onnx",
                inputs=[tensor(name="IN", datatype="FP32", shape=[-1, 3])],
                outputs=[tensor(name="OUT", datatype="FP32", shape=[-1, 3])],
            )

        def _infer(self, request):
            out = pb.ModelInferResponse(
                model_name=request.model_name, model_version="1", id=request.id
            )
            out.parameters["echo"].CopyFrom(request.parameters["tag"])
            for tensor, raw in zip(request.inputs, request.raw_input_contents):
                if tensor.datatype == "FP32":
                    data = np.frombuffer(raw, dtype="<f4") * 2
                    raw_out = data.astype("<f4").tobytes()
                else:  # BYTES: (uint32 length, bytes) pairs, echoed unchanged
                    raw_out = raw
                out.outputs.add(
                    name=tensor.name.replace("IN", "OUT"),
                    datatype=tensor.datatype,
                    shape=tensor.shape,
                )
                out.raw_output_contents.append(raw_out)
            return out

        def ModelInfer(self, request, context):
            return self._infer(request)

        def ModelStreamInfer(self, request_iterator, context):
            for request in request_iterator:
                if request.model_name != MODEL:
                    yield pb.ModelStreamInferResponse(error_message="unknown model")
                else:
                    yield pb.ModelStreamInferResponse(infer_response=self._infer(request))

        def ModelStatistics(self, request, context):
            stats = pb.ModelStatistics(
                name=MODEL, version="1", inference_count=5, execution_count=2
            )
            stats.inference_stats.success.count = 5
            stats.inference_stats.success.ns = 1234
            stats.batch_stats.add(batch_size=4).compute_infer.count = 1
            return pb.ModelStatisticsResponse(model_stats=[stats])

        def RepositoryIndex(self, request, context):
            index = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(
                models=[index(name=MODEL, version="1", state="READY")]
            )

        def RepositoryModelLoad(self, request, context):
            params = {k: v.WhichOneof("parameter_choice") for k, v in request.parameters.items()}
            self.loaded.append((request.model_name, params))
            if request.model_name != MODEL:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_name!r}")
            return pb.RepositoryModelLoadResponse()

        def RepositoryModelUnload(self, request, context):
            flag = request.parameters["unload_dependents"].bool_param
            if not flag:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected unload_dependents")
            return pb.RepositoryModelUnloadResponse()


    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    server.stop(0)
    """
)

_CLIENT = textwrap.dedent(
    """
    import json
    import queue
    import sys

    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(f"127.0.0.1:{sys.argv[1]}")
    out = {}
    out["live"] = client.is_server_live()
    out["ready"] = client.is_server_ready()
    out["model_ready"] = client.is_model_ready("double")
    out["other_ready"] = client.is_model_ready("nope")
    out["server_metadata"] = client.get_server_metadata(as_json=True)
    out["model_metadata"] = client.get_model_metadata("double", as_json=True)
    out["statistics"] = client.get_inference_statistics("double", as_json=True)
    out["index"] = client.get_model_repository_index(as_json=True)

    client.load_model("double", config='{"max_batch_size": 4}', files={"file:1/model.onnx": b"x"})
    try:
        client.load_model("missing")
    except InferenceServerException as exc:
        out["load_missing"] = exc.status()
    client.unload_model("double", unload_dependents=True)

    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = np.array([b"ab", b"", "\\u00e9".encode()], dtype=np.object_)
    inputs = [tc.InferInput("IN", [2, 3], "FP32"), tc.InferInput("IN_WORDS", [3], "BYTES")]
    inputs[0].set_data_from_numpy(data)
    inputs[1].set_data_from_numpy(words)
    result = client.infer(
        "double",
        inputs,
        request_id="req-1",
        outputs=[tc.InferRequestedOutput("OUT"), tc.InferRequestedOutput("OUT_WORDS")],
        parameters={"tag": 42},
    )
    response = result.get_response(as_json=True)
    out["infer"] = {
        "OUT": result.as_numpy("OUT").tolist(),
        "OUT_WORDS": [w.decode() for w in result.as_numpy("OUT_WORDS")],
        "id": response["id"],
        "parameters": response["parameters"],
    }

    results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer("double", inputs[:1], request_id="s-1")
    client.async_stream_infer("nope", inputs[:1], request_id="s-2")
    streamed = []
    for _ in range(2):
        result, error = results.get(timeout=30)
        if error is not None:
            streamed.append({"error": str(error)})
        else:
            response_id = result.get_response().id
            streamed.append({"id": response_id, "OUT": result.as_numpy("OUT").tolist()})
    client.stop_stream()
    out["stream"] = streamed

    try:
        client.get_model_config("double")
    except InferenceServerException as exc:
        out["model_config"] = exc.status()
    client.close()
    print(json.dumps(out))
    """
)


def test_tritonclient_end_to_end():
    _require_tritonclient()
    pytest.importorskip("numpy")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        port = server.stdout.readline().strip()
        assert port.isdigit(), f"server did not start: {port!r}\n{server.stderr.read()}"
        client = _python("-c", _CLIENT, port, timeout=120, text=True)
        assert client.returncode == 0, client.stderr
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    got = json.loads(client.stdout.strip().splitlines()[-1])
    assert got["live"] is True
    assert got["ready"] is True
    assert got["model_ready"] is True
    assert got["other_ready"] is False
    assert got["server_metadata"] == {
        "name": "vision-serving",
        "version": "0.1.0",
        "extensions": ["model_repository"],
    }
    meta = got["model_metadata"]
    assert meta["name"] == "double" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "IN", "datatype": "FP32", "shape": ["-1", "3"]}]
    stats = got["statistics"]["model_stats"][0]
    assert stats["inference_count"] == "5" and stats["execution_count"] == "2"
    assert stats["inference_stats"]["success"] == {"count": "5", "ns": "1234"}
    assert stats["batch_stats"][0]["batch_size"] == "4"
    assert got["index"]["models"] == [{"name": "double", "version": "1", "state": "READY"}]
    assert got["load_missing"] == "StatusCode.NOT_FOUND"
    assert got["infer"] == {
        "OUT": [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]],
        "OUT_WORDS": ["ab", "", "\u00e9"],
        "id": "req-1",
        "parameters": {"echo": {"int64_param": "42"}},
    }
    assert got["stream"][0] == {"id": "s-1", "OUT": [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]}
    assert "unknown model" in got["stream"][1]["error"]
    assert got["model_config"] == "StatusCode.UNIMPLEMENTED"


# --------------------------------------------------------------------------------------
# Generated code
# --------------------------------------------------------------------------------------


def test_generated_code_is_up_to_date():
    """`python -m protos.generate --check` over every .proto under protos/."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools is a dev dependency")
    result = _python("-m", "protos.generate", "--check", text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("versions", "complaint"),
    [
        ({"grpcio-tools": "1.82.0", "protobuf": "6.33.6"}, "grpcio-tools 1.82.0"),
        ({"grpcio-tools": "1.81.1", "protobuf": "7.34.0"}, "protobuf 7.34.0"),
        ({"grpcio-tools": "1.80.0", "protobuf": "5.29.0"}, "protobuf 5.29.0"),
    ],
)
def test_generate_refuses_other_toolchains(monkeypatch, capsys, versions, complaint):
    from protos import generate

    monkeypatch.setattr(generate, "_installed", versions.__getitem__)
    assert generate.main(["--check"]) == 2
    err = capsys.readouterr().err
    assert "refusing to generate" in err and complaint in err
