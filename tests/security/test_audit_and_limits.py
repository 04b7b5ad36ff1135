"""The audit log and the rate limit over real transports; tokens never reach logs."""

from __future__ import annotations

import json
import logging

import grpc
import httpx
import pytest

from protos.inference import grpc_service_pb2 as kserve
from protos.inference import grpc_service_pb2_grpc as kserve_grpc
from serving.security import RateLimit, SecuritySettings
from tests.security.conftest import make_tokens, start_secured


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_records_sign_ins_denials_admin_calls_and_model_states(repository, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = make_tokens(tmp_path)
    audit = tmp_path / "audit.jsonl"
    running = start_secured(
        repository, SecuritySettings(tokens_file=tokens.file, audit_file=audit), http_port=-1
    )
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = kserve_grpc.GRPCInferenceServiceStub(channel)
            admin, infer = _metadata(tokens.by_role["admin"]), _metadata(tokens.by_role["infer"])
            unload = kserve.RepositoryModelUnloadRequest(model_name="bright")
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                (_metadata("vt_guess"), grpc.StatusCode.UNAUTHENTICATED),
                (infer, grpc.StatusCode.PERMISSION_DENIED),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    stub.RepositoryModelUnload(unload, metadata=metadata, timeout=60)
                assert info.value.code() == code
            stub.RepositoryModelUnload(unload, metadata=admin, timeout=60)
            load = kserve.RepositoryModelLoadRequest(model_name="bright")
            stub.RepositoryModelLoad(load, metadata=admin, timeout=60)
            ready = stub.ModelReady(kserve.ModelReadyRequest(name="bright"), metadata=infer)
            assert ready.ready
    finally:
        running.stop()
    events = _events(audit)
    kinds = [e["event"] for e in events]
    assert kinds.count("unauthenticated") == 2 and kinds.count("permission_denied") == 1
    denied = next(e for e in events if e["event"] == "permission_denied")
    assert denied["token"] == "infer-client" and denied["target"].endswith("Unload")
    admin_calls = [
        (e["target"].rsplit("/", 1)[1], e["subject"]) for e in events if e["event"] == "admin_call"
    ]
    assert admin_calls == [("RepositoryModelUnload", "bright"), ("RepositoryModelLoad", "bright")]
    signed_in = {e["token"] for e in events if e["event"] == "sign_in"}
    assert signed_in == {"admin-client", "infer-client"}  # once each, not per call
    states = [e["state"] for e in events if e["event"] == "model_state" and e["model"] == "bright"]
    settled = [state for state in states if state != "LOADING"]
    assert settled[:3] == ["READY", "UNAVAILABLE", "READY"]  # start, unload, load (then stop)
    logged = audit.read_text() + "\n".join(r.getMessage() for r in caplog.records)
    for token in (*tokens.by_role.values(), "vt_guess"):
        assert token not in logged
    assert any(r.name == "vision.audit" for r in caplog.records)


def test_http_audit_names_the_route_and_model_never_the_path(repository, tmp_path):
    tokens = make_tokens(tmp_path)
    audit = tmp_path / "audit.jsonl"
    running = start_secured(repository, SecuritySettings(tokens_file=tokens.file, audit_file=audit))
    uid = "1.2.826.0.1.3680043.2.1125.99999"
    try:
        admin = {"Authorization": f"Bearer {tokens.by_role['admin']}"}
        with httpx.Client(base_url=running.http_base, timeout=60) as client:
            assert (
                client.post("/v2/repository/models/boxes/unload", headers=admin).status_code == 200
            )
            assert client.post("/v2/repository/models/boxes/load", headers=admin).status_code == 200
            assert client.get(f"/v2/models/{uid}", headers=admin).status_code == 403
            assert client.get(f"/anything/{uid}").status_code == 401
    finally:
        running.stop()
    events = _events(audit)
    calls = [(e["target"], e["subject"]) for e in events if e["event"] == "admin_call"]
    assert calls == [
        ("POST /v2/repository/models/{name}/unload", "boxes"),
        ("POST /v2/repository/models/{name}/load", "boxes"),
    ]
    assert uid not in audit.read_text()


def test_rate_limit_answers_resource_exhausted_and_429(repository, tmp_path):
    tokens = make_tokens(tmp_path)
    security = SecuritySettings(tokens_file=tokens.file, rate_limit=RateLimit(0.001, 2))
    running = start_secured(repository, security)
    try:
        infer = tokens.by_role["infer"]
        with grpc.insecure_channel(running.address) as channel:
            stub = kserve_grpc.GRPCInferenceServiceStub(channel)
            request = kserve.ModelReadyRequest(name="bright")
            for _ in range(2):
                assert stub.ModelReady(request, metadata=_metadata(infer), timeout=60).ready
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelReady(request, metadata=_metadata(infer), timeout=60)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "rate limit" in info.value.details()
            # another client has its own bucket; health is never limited
            admin = _metadata(tokens.by_role["admin"])
            stub.RepositoryIndex(kserve.RepositoryIndexRequest(), metadata=admin, timeout=60)
            for _ in range(5):
                stub.ServerLive(kserve.ServerLiveRequest(), timeout=60)
        with httpx.Client(base_url=running.http_base, timeout=60) as client:
            # the bucket is per token across both ports: this token has spent its burst
            reply = client.get("/v2/models/bright", headers={"Authorization": f"Bearer {infer}"})
            assert reply.status_code == 429 and int(reply.headers["retry-after"]) >= 1
            assert client.get("/v2/health/ready").status_code == 200
    finally:
        running.stop()


def test_metrics_and_reflection_follow_their_settings(repository, tmp_path):
    tokens = make_tokens(tmp_path)
    security = SecuritySettings(tokens_file=tokens.file, metrics="public", reflection=False)
    running = start_secured(repository, security)
    try:
        with httpx.Client(base_url=running.http_base, timeout=60) as client:
            assert client.get("/metrics").status_code == 200  # public: no token
        with grpc.insecure_channel(running.address) as channel:
            call = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=lambda m: m,
                response_deserializer=lambda m: m,
            )(iter([b""]), metadata=_metadata(tokens.by_role["infer"]), timeout=60)
            with pytest.raises(grpc.RpcError) as info:
                next(call)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop()
    off = start_secured(repository, SecuritySettings(tokens_file=tokens.file, metrics="off"))
    try:
        headers = {"Authorization": f"Bearer {tokens.by_role['metrics']}"}
        reply = httpx.get(f"{off.http_base}/metrics", headers=headers, timeout=60)
        assert reply.status_code == 403 and "no access rule" in reply.json()["error"]
    finally:
        off.stop()


def test_audit_log_reopens_after_rotation(tmp_path):
    from serving.security import AuditLog

    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    audit.record("first")
    path.rename(tmp_path / "audit.jsonl.1")  # logrotate moves the file away
    audit.record("second")  # still the old file until reopened
    audit.reopen()
    audit.record("third")
    audit.close()
    assert [e["event"] for e in _events(tmp_path / "audit.jsonl.1")] == ["first", "second"]
    assert [e["event"] for e in _events(path)] == ["third"]
