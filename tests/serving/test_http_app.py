"""The HTTP port: KServe v2 REST (JSON and binary tensors), errors, API key, /metrics.

A real VisionServer with uvicorn on loopback, called with urllib as any HTTP client would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message

import numpy as np
import pytest

from serving.http import HttpServer, build_http_app
from serving.http.errors import HTTP_STATUSES, http_status_for
from serving.metrics import Metrics
from serving.rpc.interceptors import STATUS_CODES
from tests.serving.conftest import ServerThread, start_server
from vision.errors import (
    DeadlineExceededError,
    ImageTooLargeError,
    InvalidInputError,
    ModelNotFoundError,
    ModelUnavailableError,
    QueueFullError,
    UnsupportedFormatError,
)

KEY = "s3cret-key"


class Reply:
    """Status, headers and body of one HTTP exchange."""

    def __init__(self, status: int, headers: Message, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> object:
        return json.loads(self.body)


def call(
    base: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    request = urllib.request.Request(base + path, body, headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def post_json(base: str, path: str, payload: object, **headers: str) -> Reply:
    data = json.dumps(payload).encode()
    return call(base, path, "POST", data, {"Content-Type": "application/json", **headers})


def _base(running: ServerThread) -> str:
    return f"http://127.0.0.1:{running.server.http_port}"


@pytest.fixture(scope="module")
def http(repository) -> Iterator[str]:
    running = start_server(repository, http_port=0)
    yield _base(running)
    running.stop()


@pytest.fixture(scope="module")
def guarded(repository) -> Iterator[str]:
    """A server with an API key and a small body limit."""
    running = start_server(repository, http_port=0, api_key=KEY, max_message_bytes=200_000)
    yield _base(running)
    running.stop()


def _images(batch: int = 2) -> np.ndarray:
    images = np.zeros((batch, 3, 64, 64), dtype=np.float32)
    images[-1, :, 10:20, 10:20] = 1.0
    return images


def _binary_request(images: np.ndarray, **parameters: object) -> tuple[bytes, dict[str, str]]:
    raw = images.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "images",
                "datatype": "FP32",
                "shape": list(images.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": parameters,
    }
    text = json.dumps(header).encode()
    return text + raw, {"Inference-Header-Content-Length": str(len(text))}


def _binary_outputs(reply: Reply) -> tuple[dict, dict[str, np.ndarray]]:
    length = int(reply.headers["Inference-Header-Content-Length"])
    header = json.loads(reply.body[:length])
    arrays, offset = {}, length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4"}[output["datatype"]]
        chunk = reply.body[offset : offset + size]
        arrays[output["name"]] = np.frombuffer(chunk, dtype).reshape(output["shape"])
        offset += size
    assert offset == len(reply.body)
    return header, arrays


def test_health_and_server_metadata(http):
    assert call(http, "/v2/health/live").json() == {"live": True}
    ready = call(http, "/v2/health/ready")
    assert ready.status == 200 and ready.json() == {"ready": True}
    meta = call(http, "/v2").json()
    assert meta["name"] == "vision-serving"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_ready_and_metadata(http):
    assert call(http, "/v2/models/bright/ready").status == 200
    assert call(http, "/v2/models/bright/versions/1/ready").status == 200
    assert call(http, "/v2/models/bright/versions/9/ready").status == 503
    assert call(http, "/v2/models/nope/ready").status == 503
    meta = call(http, "/v2/models/boxes").json()
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 128, 128]}]
    assert meta["outputs"][0]["name"] == "output0"
    assert call(http, "/v2/models/bright/versions/1").json()["versions"] == ["1", "2"]
    missing = call(http, "/v2/models/nope")
    assert missing.status == 404 and "nope" in missing.json()["error"]


def test_infer_json_tensors(http):
    images = _images()
    payload = {
        "id": "req-7",
        "inputs": [
            {"name": "images", "datatype": "FP32", "shape": [2, 3, 64, 64], "data": images.tolist()}
        ],
    }
    reply = post_json(http, "/v2/models/bright/infer", payload)
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("bright", "2", "req-7")
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "logits",
        "FP32",
        [2, 2, 64, 64],
    )
    labels = np.asarray(output["data"], np.float32).reshape(output["shape"]).argmax(axis=1)
    assert labels[0].sum() == 0 and labels[1].sum() == 100


def test_infer_binary_tensors_match_json(http):
    images = _images()
    body, headers = _binary_request(images, binary_data_output=True)
    reply = call(http, "/v2/models/bright/versions/1/infer", "POST", body, headers)
    assert reply.status == 200 and reply.headers["content-type"] == "application/octet-stream"
    header, arrays = _binary_outputs(reply)
    assert header["model_version"] == "1"
    flat = {"name": "images", "datatype": "FP32", "shape": [2, 3, 64, 64]}
    as_json = post_json(
        http,
        "/v2/models/bright/versions/1/infer",
        {"inputs": [{**flat, "data": images.ravel().tolist()}]},
    ).json()
    expected = np.asarray(as_json["outputs"][0]["data"], np.float32).reshape(2, 2, 64, 64)
    np.testing.assert_array_equal(arrays["logits"], expected)


def test_binary_data_per_output_overrides_the_request_default(http):
    body, headers = _binary_request(_images(1), binary_data_output=True)
    header = json.loads(body[: int(headers["Inference-Header-Content-Length"])])
    header["outputs"] = [{"name": "brightness", "parameters": {"binary_data": False}}]
    header["outputs"].append({"name": "logits"})
    text = json.dumps(header).encode()
    raw = body[int(headers["Inference-Header-Content-Length"]) :]
    headers = {"Inference-Header-Content-Length": str(len(text))}
    reply = call(http, "/v2/models/bright-scored/infer", "POST", text + raw, headers)
    assert reply.status == 200, reply.body
    length = int(reply.headers["Inference-Header-Content-Length"])
    outputs = json.loads(reply.body[:length])["outputs"]
    assert [o["name"] for o in outputs] == ["brightness", "logits"]
    assert "data" in outputs[0] and "parameters" not in outputs[0]
    assert (
        outputs[1]["parameters"]["binary_data_size"] == 2 * 64 * 64 * 4 == len(reply.body) - length
    )


def test_gzip_compressed_request(http):
    body, headers = _binary_request(_images(1))
    reply = call(
        http,
        "/v2/models/bright/infer",
        "POST",
        gzip.compress(body),
        {**headers, "Content-Encoding": "gzip"},
    )
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["shape"] == [1, 2, 64, 64]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "says"),
    [
        ("/v2/models/bright/infer", b"not json", {}, 400, "not a JSON object"),
        ("/v2/models/bright/infer", b"[1, 2]", {}, 400, "JSON object"),
        ("/v2/models/bright/infer", b'{"inputs": []}', {}, 400, "no inputs"),
        (
            "/v2/models/bright/infer",
            b'{"x": 1}',
            {"Inference-Header-Content-Length": "99"},
            400,
            "Inference-Header-Content-Length",
        ),
        ("/v2/models/missing/infer", None, {}, 404, "missing"),
        ("/v2/models/bright/infer", None, {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ],
)
def test_bad_requests_get_clear_statuses(http, path, body, headers, status, says):
    if body is None:
        body = json.dumps(
            {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [0.5]}]}
        ).encode()
    reply = call(http, path, "POST", body, headers)
    assert reply.status == status, reply.body
    assert says in reply.json()["error"]


def test_tensor_errors_name_what_to_fix(http):
    def infer(model: str, tensor: dict, extra: bytes = b"", **parameters) -> Reply:
        text = json.dumps({"inputs": [tensor], "parameters": parameters}).encode()
        headers = {"Inference-Header-Content-Length": str(len(text))} if extra else {}
        return call(http, f"/v2/models/{model}/infer", "POST", text + extra, headers)

    zeros = np.zeros((1, 3, 64, 64), np.float32)
    spec = {"datatype": "FP32", "shape": [1, 3, 64, 64]}
    wrong_name = infer("bright", {"name": "wrong", **spec, "data": zeros.ravel().tolist()})
    assert wrong_name.status == 400 and "images" in wrong_name.json()["error"]
    wrong_shape = infer("boxes", {"name": "images", **spec, "data": zeros.ravel().tolist()})
    assert wrong_shape.status == 400 and "128" in wrong_shape.json()["error"]
    short = infer("bright", {"name": "images", **spec, "data": [0.0, 1.0]})
    assert short.status == 400 and "2 values" in short.json()["error"]
    raw = zeros.tobytes()
    sized = {"name": "images", **spec, "parameters": {"binary_data_size": len(raw)}}
    trailing = infer("bright", sized, raw + b"\0\0\0\0")
    assert trailing.status == 400 and "4 bytes after" in trailing.json()["error"]
    bad_type = infer("bright", {"name": "images", "datatype": "COMPLEX", "shape": [1], "data": [1]})
    assert bad_type.status == 400 and "FP32" in bad_type.json()["error"]
    unknown_output = post_json(
        http,
        "/v2/models/bright/infer",
        {
            "inputs": [{"name": "images", **spec, "data": zeros.ravel().tolist()}],
            "outputs": [{"name": "nope"}],
        },
    )
    assert unknown_output.status == 400 and "logits" in unknown_output.json()["error"]


def test_unknown_route_and_wrong_method_are_json(http):
    missing = call(http, "/v3/nothing")
    assert missing.status == 404 and "error" in missing.json()
    wrong = call(http, "/v2/models/bright/infer")  # GET
    assert wrong.status == 405 and "POST" in wrong.headers["allow"]


def test_repository_bodies_that_json_cannot_use_are_400(http):
    """A 5000-digit integer (Python's int-conversion limit) or deep nesting in a repository
    body is the client's error, not a 500."""
    huge = b'{"ready": ' + b"1" * 5000 + b"}"
    deep = b'{"ready": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for body in (huge, deep):
        reply = call(http, "/v2/repository/index", "POST", body)
        assert reply.status == 400, reply.json()
        assert "JSON" in reply.json()["error"]


def test_repository_index_unload_load_and_statistics(http):
    index = post_json(http, "/v2/repository/index", {}).json()
    states = {(m["name"], m["version"]): m["state"] for m in index}
    assert states[("bright", "2")] == "READY" and states[("boxes", "1")] == "READY"
    assert call(http, "/v2/repository/models/boxes/unload", "POST", b"").status == 200
    assert call(http, "/v2/models/boxes/ready").status == 503
    ready_only = post_json(http, "/v2/repository/index", {"ready": True}).json()
    assert "boxes" not in {m["name"] for m in ready_only}
    assert call(http, "/v2/repository/models/boxes/load", "POST", b"{}").status == 200
    assert call(http, "/v2/models/boxes/ready").status == 200
    missing = call(http, "/v2/repository/models/not-there/load", "POST", b"")
    assert missing.status == 404 and "not-there" in missing.json()["error"]
    override = post_json(http, "/v2/repository/models/boxes/load", {"parameters": {"config": "{}"}})
    assert override.status == 400

    body, headers = _binary_request(_images(1))
    for _ in range(2):
        assert call(http, "/v2/models/bright/versions/2/infer", "POST", body, headers).status == 200
    stats = call(http, "/v2/models/bright/versions/2/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("bright", "2")]
    assert stats[0]["inference_stats"]["success"]["count"] >= 2
    assert stats[0]["inference_stats"]["compute_infer"]["ns"] > 0
    everything = call(http, "/v2/models/stats").json()["model_stats"]
    assert ("bright", "2") in {(s["name"], s["version"]) for s in everything}
    assert call(http, "/v2/models/nope/stats").status == 404


def test_metrics_on_the_same_port(http):
    body, headers = _binary_request(_images(1))
    assert call(http, "/v2/models/bright/infer", "POST", body, headers).status == 200
    assert call(http, "/v2/models/missing/infer", "POST", body, headers).status == 404
    reply = call(http, "/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    assert 'vision_requests_total{api="infer",model="bright",outcome="ok",version="2"}' in text
    assert "vision_batch_size_bucket" in text and "vision_queue_depth" in text


def test_api_key_guards_everything_but_health(guarded):
    assert call(guarded, "/v2/health/live").status == 200
    assert call(guarded, "/v2/health/ready").status == 200
    assert call(guarded, "/metrics").status == 401  # --metrics token is the default
    assert call(guarded, "/metrics", headers={"Authorization": f"Bearer {KEY}"}).status == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        denied = call(guarded, "/v2/models/bright", headers=headers)
        assert denied.status == 401 and "token" in denied.json()["error"]
        assert denied.headers["www-authenticate"] == "Bearer"
    assert call(guarded, "/v2/models/bright/ready").status == 401
    assert call(guarded, "/v2/repository/models/boxes/unload", "POST", b"").status == 401
    allowed = call(guarded, "/v2/models/bright", headers={"Authorization": f"Bearer {KEY}"})
    assert allowed.status == 200 and allowed.json()["name"] == "bright"


def test_body_over_the_limit_is_413(guarded):
    auth = {"Authorization": f"Bearer {KEY}"}
    body, headers = _binary_request(_images(1))  # 49 KB: fits
    assert call(guarded, "/v2/models/bright/infer", "POST", body, {**auth, **headers}).status == 200
    big, headers = _binary_request(np.zeros((8, 3, 64, 64), np.float32))  # 393 KB
    reply = call(guarded, "/v2/models/bright/infer", "POST", big, {**auth, **headers})
    assert reply.status == 413 and "200000" in reply.json()["error"]
    bomb = gzip.compress(big)  # small on the wire, over the limit inflated
    assert len(bomb) < 200_000
    gz = {**auth, **headers, "Content-Encoding": "gzip"}
    assert call(guarded, "/v2/models/bright/infer", "POST", bomb, gz).status == 413


def test_status_mapping_mirrors_grpc():
    cases = {
        InvalidInputError("x"): 400,
        UnsupportedFormatError("x"): 400,
        ModelNotFoundError("x"): 404,
        ImageTooLargeError("x"): 413,
        QueueFullError("x"): 429,
        ModelUnavailableError("x"): 503,
        DeadlineExceededError("x"): 504,
        RuntimeError("x"): 500,
    }
    assert {type(e): http_status_for(e) for e in cases} == {type(e): s for e, s in cases.items()}
    assert {t for t, _ in HTTP_STATUSES} == {t for t, _ in STATUS_CODES}


class _BrokenPlane:
    """A data plane whose metadata fails unexpectedly (with a detail the client must not see)."""

    def model_metadata(self, name: str, version: str = ""):
        raise RuntimeError("secret detail /etc/passwd")

    def server_live(self) -> bool:
        return True


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_unexpected_error_is_500_without_details_and_server_restarts(caplog):
    async def main() -> tuple[Reply, Reply, int, bool]:
        server = HttpServer(build_http_app(_BrokenPlane(), Metrics()), drain_timeout_s=2)
        port = await server.start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        broken = await loop.run_in_executor(None, call, base, "/v2/models/any")
        live = await loop.run_in_executor(None, call, base, "/v2/health/live")
        await server.stop()
        with socket.socket() as probe:
            refused = probe.connect_ex(("127.0.0.1", port)) != 0
        with _taken_port() as taken, pytest.raises(OSError, match="in use"):
            await HttpServer(build_http_app(_BrokenPlane(), Metrics())).start(
                "127.0.0.1", taken.getsockname()[1]
            )
        return broken, live, port, refused

    broken, live, port, refused = asyncio.run(main())
    assert port > 0 and refused
    assert broken.status == 500
    assert broken.json() == {
        "error": "internal error (RuntimeError); the server log has the details"
    }
    assert "secret detail /etc/passwd" in caplog.text  # logged, with the traceback
    assert live.status == 200
