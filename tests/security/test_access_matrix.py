"""Every RPC and every HTTP route, called with no token, a wrong one and one of each role.

The expectations below are written out by hand (not read from serving/security/policy.py), and
the RPCs and routes are enumerated from the service descriptors and the running app: a new RPC
or route fails here until it has both an access rule and an expectation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from starlette.routing import Mount, Route

from protos.inference import grpc_service_pb2
from protos.vision.v1 import vision_pb2
from serving.security.guard import MALFORMED, NO_TOKEN, UNKNOWN

OPEN, ANY = "open", "any"  # no token needed / any valid token
INFER, ADMIN, METRICS = {"infer"}, {"admin"}, {"metrics"}
STATS = {"metrics", "admin"}
CALLERS = ("none", "wrong", "infer", "admin", "metrics")
REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# A call that passed the guard still fails on its empty request, but never like this.
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

EXPECTED_GRPC = {
    "vision.v1.VisionService": {
        "Detect": INFER,
        "Segment": INFER,
        "ListModels": INFER,
        "GetModelMetadata": INFER,
        "Explain": INFER,
        "Inspect": INFER,
        "SegmentVolume": INFER,
    },
    "inference.GRPCInferenceService": {
        "ServerLive": OPEN,
        "ServerReady": OPEN,
        "ModelReady": INFER,
        "ServerMetadata": INFER,
        "ModelMetadata": INFER,
        "ModelInfer": INFER,
        "ModelStreamInfer": INFER,
        "ModelStatistics": STATS,
        "RepositoryIndex": ADMIN,
        "RepositoryModelLoad": ADMIN,
        "RepositoryModelUnload": ADMIN,
        "SystemSharedMemoryStatus": INFER,
        "SystemSharedMemoryRegister": INFER,
        "SystemSharedMemoryUnregister": INFER,
    },
    "grpc.health.v1.Health": {"Check": OPEN, "Watch": OPEN},  # the whole-server query
    "grpc.reflection.v1alpha.ServerReflection": {"ServerReflectionInfo": ANY},
}
SERVICES = (
    vision_pb2.DESCRIPTOR.services_by_name["VisionService"],
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
# Requests that must not change anything when they pass (a model that does not exist).
REQUESTS = {
    "RepositoryModelLoad": {"model_name": "absent"},
    "RepositoryModelUnload": {"model_name": "absent"},
}

# (method, route path) -> who passes; routes under /review authenticate their own users.
EXPECTED_HTTP = {
    ("GET", "/metrics"): METRICS,
    ("GET", "/v2/health/live"): OPEN,
    ("GET", "/v2/health/ready"): OPEN,
    ("GET", "/v2"): INFER,
    ("GET", "/v2/models/stats"): STATS,
    ("GET", "/v2/models/{name}/stats"): STATS,
    ("GET", "/v2/models/{name}/versions/{version}/stats"): STATS,
    ("GET", "/v2/models/{name}/ready"): INFER,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): INFER,
    ("GET", "/v2/models/{name}"): INFER,
    ("GET", "/v2/models/{name}/versions/{version}"): INFER,
    ("POST", "/v2/models/{name}/infer"): INFER,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): INFER,
    ("POST", "/v2/repository/index"): ADMIN,
    ("POST", "/v2/repository/models/{name}/load"): ADMIN,
    ("POST", "/v2/repository/models/{name}/unload"): ADMIN,
    ("GET", "/v2/systemsharedmemory/status"): INFER,
    ("GET", "/v2/systemsharedmemory/region/{region}/status"): INFER,
    ("POST", "/v2/systemsharedmemory/region/{region}/register"): INFER,
    ("POST", "/v2/systemsharedmemory/region/{region}/unregister"): INFER,
    ("POST", "/v2/systemsharedmemory/unregister"): INFER,
    ("POST", "/dicomweb/studies"): INFER,
    ("POST", "/dicomweb/studies/{study}"): INFER,
    ("GET", "/dicom-node/jobs"): ADMIN,
    ("GET", "/dicom-node/jobs/{job_id}"): ADMIN,
    ("GET", "/dicom-node/outbox"): ADMIN,
    ("POST", "/dicom-node/outbox/{item_id:int}/retry"): ADMIN,
    ("POST", "/dicom-node/outbox/{item_id:int}/discard"): ADMIN,
}
PARAMS = {
    "name": "absent",
    "version": "1",
    "study": "1.2.3",
    "job_id": "absent",
    "item_id": "9",
    "region": "absent",
}


def _token(tokens, caller: str) -> str | None:
    if caller == "none":
        return None
    return "vt_wrong-token-of-the-right-shape" if caller == "wrong" else tokens.by_role[caller]


def _expected_refusal(expected, caller: str) -> str | None:
    """None when the caller passes the guard, else 'unauthenticated' / 'denied'."""
    if expected == OPEN:
        return None
    if caller in ("none", "wrong"):
        return "unauthenticated"
    if expected == ANY or caller in expected:
        return None
    return "denied"


# --- gRPC ---------------------------------------------------------------------------------


def _methods() -> Iterator[tuple[str, str, object]]:
    for service in SERVICES:
        for method in service.methods:
            yield service.full_name, method.name, method


def test_every_rpc_has_an_expectation():
    found = {(service, name) for service, name, _ in _methods()}
    expected = {(s, m) for s, methods in EXPECTED_GRPC.items() for m in methods}
    assert found == expected, "give each new RPC an access rule and an expectation here"


def _invoke(channel: grpc.Channel, method, metadata) -> grpc.StatusCode:
    """Call `method` with a default request; OK once it answers at all (first message)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    request = request_type(**REQUESTS.get(method.name, {}))
    codec = {
        "request_serializer": request_type.SerializeToString,
        "response_deserializer": reply_type.FromString,
    }
    options = {"metadata": metadata, "timeout": 60}
    try:
        if not method.client_streaming and not method.server_streaming:
            channel.unary_unary(path, **codec)(request, **options)
            return grpc.StatusCode.OK
        if method.client_streaming:
            call = channel.stream_stream(path, **codec)(iter([request]), **options)
        else:
            call = channel.unary_stream(path, **codec)(request, **options)
        try:
            next(call, None)
        finally:
            call.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


@pytest.mark.parametrize("caller", CALLERS)
def test_every_rpc_for_every_caller(secured, tokens, caller):
    token = _token(tokens, caller)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    wrong = []
    with grpc.insecure_channel(secured.address) as channel:
        for service, name, method in _methods():
            code = _invoke(channel, method, metadata)
            refusal = _expected_refusal(EXPECTED_GRPC[service][name], caller)
            want = {
                None: "passes",
                "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
                "denied": grpc.StatusCode.PERMISSION_DENIED,
            }[refusal]
            if (refusal is None and code in REFUSALS | BROKEN) or (refusal and code != want):
                wrong.append(f"{service}/{name}: {code.name}, expected {want}")
    assert not wrong, wrong


def test_health_names_no_model_without_a_token(secured, tokens):
    with grpc.insecure_channel(secured.address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        whole = check(health_pb2.HealthCheckRequest(), timeout=30)
        assert whole.status == health_pb2.HealthCheckResponse.SERVING
        for name in ("bright", "absent"):  # an existing and a missing model look the same
            with pytest.raises(grpc.RpcError) as info:
                check(health_pb2.HealthCheckRequest(service=name), timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {tokens.by_role['metrics']}"),)
        named = check(health_pb2.HealthCheckRequest(service="bright"), metadata=metadata)
        assert named.status == health_pb2.HealthCheckResponse.SERVING


def test_refusals_say_what_to_send(secured, tokens):
    with grpc.insecure_channel(secured.address) as channel:
        stub = channel.unary_unary(
            "/vision.v1.VisionService/ListModels",
            request_serializer=vision_pb2.ListModelsRequest.SerializeToString,
            response_deserializer=vision_pb2.ListModelsResponse.FromString,
        )
        cases = [
            ((), grpc.StatusCode.UNAUTHENTICATED, "authorization: Bearer"),
            ((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED, "exactly one"),
            ((("authorization", "Bearer nope"),), grpc.StatusCode.UNAUTHENTICATED, "unknown"),
            (
                (("authorization", f"Bearer {tokens.by_role['metrics']}"),),
                grpc.StatusCode.PERMISSION_DENIED,
                "needs a token with role infer",
            ),
        ]
        for metadata, code, text in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub(vision_pb2.ListModelsRequest(), metadata=metadata, timeout=30)
            assert info.value.code() == code and text in info.value.details()
            assert "bright" not in info.value.details()  # no model names in refusals


# --- HTTP ---------------------------------------------------------------------------------


def _routes(routes, prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield method, prefix + route.path


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS[m.group(1)], path)


def _guard_refusal(reply: httpx.Response) -> str | None:
    """'unauthenticated' / 'denied' when the server's guard (not a route) refused the call."""
    if reply.status_code not in (401, 403):
        return None
    try:
        body = reply.json()
    except ValueError:
        return None
    error = body.get("error", "") if isinstance(body, dict) else ""
    if reply.status_code == 401 and error in (NO_TOKEN, MALFORMED, UNKNOWN):
        return "unauthenticated"
    if reply.status_code == 403 and "may not call" in error:
        return "denied"
    return None


def _served_routes(secured) -> set[tuple[str, str]]:
    return set(_routes(secured.server._http.app.routes))


def test_every_route_has_an_expectation(secured):
    if secured.server.dicom is None:
        pytest.skip("the DICOM node needs the dicom extra (pip install -e .[dicom])")
    found = {r for r in _served_routes(secured) if not r[1].startswith("/review")}
    assert found == set(EXPECTED_HTTP), "give each new route an access rule and an expectation"


@pytest.mark.parametrize("caller", CALLERS)
def test_every_route_for_every_caller(secured, tokens, caller):
    token = _token(tokens, caller)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    wrong = []
    with httpx.Client(base_url=secured.http_base, timeout=60) as client:
        for method, path in sorted(_served_routes(secured)):
            reply = client.request(method, _concrete(path), headers=headers, content=b"")
            refusal = _guard_refusal(reply)
            if path.startswith("/review"):  # the review tool signs its own users in
                expected = None
            else:
                expected = _expected_refusal(EXPECTED_HTTP[(method, path)], caller)
            if refusal != expected or reply.status_code == 500:
                wrong.append(f"{method} {path}: {reply.status_code} {refusal}, want {expected}")
    assert not wrong, wrong


def test_unknown_and_tricky_paths(secured, tokens):
    infer = {"Authorization": f"Bearer {tokens.by_role['infer']}"}
    with httpx.Client(base_url=secured.http_base, timeout=60) as client:
        assert client.get("/nothing-here").status_code == 401  # no hint that it is absent
        assert client.get("/nothing-here", headers=infer).status_code == 403  # no rule
        assert client.post("/v2/repository/models/x/../../index", headers=infer).status_code in (
            400,
            403,
        )
        two = [("Authorization", f"Bearer {tokens.by_role['infer']}")] * 2
        assert client.get("/v2", headers=two).status_code == 401
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 200 and "bright" not in ready.text
