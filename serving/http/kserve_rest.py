"""KServe v2 REST (Open Inference Protocol) routes, as tritonclient.http calls them.

Health, server and model metadata, inference (JSON tensors and the binary tensor data
extension), and Triton's repository, statistics and system shared-memory extensions. Every
route only translates between JSON and the data plane; errors become statuses in
`serving/http/errors.py`.
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.dataplane import DataPlane, InferResult
from serving.http.codec import HEADER_LENGTH, InferRequest, decode_request, encode_response
from serving.model_info import ModelMetadata, TensorMetadata
from serving.shared_memory import SharedMemoryRegistry, write_to_region
from serving.statistics import Duration, VersionStatistics
from serving.tensors import tensor_from_bytes
from vision.errors import InvalidInputError

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
# Request bodies compressed as tritonclient's request_compression_algorithm does.
_WBITS = {"gzip": 31, "deflate": 15}


def kserve_routes(
    plane: DataPlane, max_body_bytes: int, shared_memory: SharedMemoryRegistry | None = None
) -> list[Route]:
    """The KServe v2 routes over `plane`; bodies above `max_body_bytes` are refused (413).

    `shared_memory`: the process's system shared-memory regions (the gRPC API's too).
    """
    rest = _KServeRest(plane, max_body_bytes, shared_memory or SharedMemoryRegistry())
    shm, region = "/v2/systemsharedmemory", "/v2/systemsharedmemory/region/{region}"
    model = "/v2/models/{name}"
    version = "/v2/models/{name}/versions/{version}"
    get, post = ["GET"], ["POST"]
    return [
        Route("/v2/health/live", rest.live, methods=get),
        Route("/v2/health/ready", rest.ready, methods=get),
        Route("/v2", rest.server_metadata, methods=get),
        # Before model metadata, whose {name} would otherwise take "stats".
        Route("/v2/models/stats", rest.statistics, methods=get),
        Route(f"{model}/stats", rest.statistics, methods=get),
        Route(f"{version}/stats", rest.statistics, methods=get),
        Route(f"{model}/ready", rest.model_ready, methods=get),
        Route(f"{version}/ready", rest.model_ready, methods=get),
        Route(model, rest.model_metadata, methods=get),
        Route(version, rest.model_metadata, methods=get),
        Route(f"{model}/infer", rest.infer, methods=post),
        Route(f"{version}/infer", rest.infer, methods=post),
        Route("/v2/repository/index", rest.repository_index, methods=post),
        Route("/v2/repository/models/{name}/load", rest.load, methods=post),
        Route("/v2/repository/models/{name}/unload", rest.unload, methods=post),
        Route(f"{shm}/status", rest.shm_status, methods=get),
        Route(f"{region}/status", rest.shm_status, methods=get),
        Route(f"{region}/register", rest.shm_register, methods=post),
        Route(f"{shm}/unregister", rest.shm_unregister, methods=post),
        Route(f"{region}/unregister", rest.shm_unregister, methods=post),
    ]


def _names(request: Request) -> tuple[str, str]:
    params = request.path_params
    return params["name"], params.get("version", "")


def _ready_response(ready: bool, **fields: Any) -> Response:
    """200 when ready, 503 when not (what probes and tritonclient's is_*_ready read)."""
    return JSONResponse({**fields, "ready": ready}, status_code=200 if ready else 503)


class _KServeRest:
    """Route handlers over one data plane."""

    def __init__(self, plane: DataPlane, max_body_bytes: int, shm: SharedMemoryRegistry) -> None:
        self._plane = plane
        self._max_body = max_body_bytes
        self._shm = shm

    async def live(self, request: Request) -> Response:
        live = self._plane.server_live()
        return JSONResponse({"live": live}, status_code=200 if live else 503)

    async def ready(self, request: Request) -> Response:
        return _ready_response(self._plane.server_ready())

    async def server_metadata(self, request: Request) -> Response:
        meta = self._plane.server_metadata()
        return JSONResponse(
            {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
        )

    async def model_ready(self, request: Request) -> Response:
        name, version = _names(request)
        return _ready_response(self._plane.model_ready(name, version), name=name)

    async def model_metadata(self, request: Request) -> Response:
        return JSONResponse(metadata_json(self._plane.model_metadata(*_names(request))))

    async def infer(self, request: Request) -> Response:
        """Admitted on the model's gate before the body is read or decoded (429 at capacity):
        a refusal costs no JSON parse, and no upload from a client that sent
        `Expect: 100-continue` (others have their body discarded unread, see `discard_body`)."""
        name, version = _names(request)
        check_declared_length(request, self._max_body)
        decoded: list[InferRequest] = []
        reading: list[bool] = []
        with contextlib.ExitStack() as leases:

            async def read() -> tuple[dict, float | None]:
                reading.append(True)
                body = await read_body(request, self._max_body)
                decoded.append(decode_request(body, request.headers.get(HEADER_LENGTH)))
                timeout_us = decoded[0].timeout_us
                deadline = None if timeout_us is None else time.monotonic() + timeout_us / 1e6
                return {**decoded[0].feeds, **self._shm_feeds(decoded[0], leases)}, deadline

            try:
                result = await self._plane.infer_unread(name, version, read)
            except Exception:
                if not reading:  # refused before the body was read
                    await discard_body(request, self._max_body)
                raise
        return self._response(decoded[0], result)

    def _response(self, decoded: InferRequest, result: InferResult) -> Response:
        selection = decoded.selection(result.outputs)
        for output, ref in decoded.shm_outputs.items():
            write_to_region(output, result.outputs[output], ref, self._shm)
        content, header_length = encode_response(
            result.model,
            result.version,
            decoded.id,
            result.outputs,
            selection,
            in_shared_memory=decoded.shm_outputs,
        )
        if header_length is None:
            return Response(content, media_type=JSON_TYPE)
        return Response(
            content, media_type=BINARY_TYPE, headers={HEADER_LENGTH: str(header_length)}
        )

    def _shm_feeds(self, decoded: InferRequest, leases: contextlib.ExitStack) -> dict:
        """The shared-memory inputs as arrays over their regions, leased until `leases` ends."""
        return {
            name: tensor_from_bytes(
                name, spec.datatype, spec.shape, leases.enter_context(self._shm.lease(spec.ref))
            )
            for name, spec in decoded.shm_inputs.items()
        }

    async def shm_status(self, request: Request) -> Response:
        """Registered regions, as Triton's REST API lists them."""
        regions = self._shm.status(request.path_params.get("region", ""))
        return JSONResponse(
            [
                {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                for r in regions
            ]
        )

    async def shm_register(self, request: Request) -> Response:
        """Map a region: body {"key": ..., "offset": ..., "byte_size": ...}."""
        options = await _json_object(request, self._max_body)
        key, offset, size = options.get("key"), options.get("offset", 0), options.get("byte_size")
        if not isinstance(key, str) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, size)
        ):
            raise InvalidInputError(
                "register needs 'key' (string), 'byte_size' and 'offset' (integers >= 0)"
            )
        self._shm.register(request.path_params["region"], key, offset, size)
        return Response(status_code=200)

    async def shm_unregister(self, request: Request) -> Response:
        """Forget one region (or all)."""
        await _json_object(request, self._max_body)
        self._shm.unregister(request.path_params.get("region", ""))
        return Response(status_code=200)

    async def repository_index(self, request: Request) -> Response:
        options = await _json_object(request, self._max_body)
        ready = options.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInputError("'ready' must be true or false")
        return JSONResponse(
            [
                {"name": row.name, "version": row.version, "state": row.state, "reason": row.reason}
                for row in self._plane.repository_index(ready)
            ]
        )

    async def load(self, request: Request) -> Response:
        options = await _json_object(request, self._max_body)
        parameters = options.get("parameters") or {}
        if parameters:
            raise InvalidInputError(
                f"load parameters {sorted(parameters)} are not supported: the model loads "
                "from its folder in the repository"
            )
        await self._plane.load_model(request.path_params["name"])
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        await _json_object(request, self._max_body)  # unload_dependents: there are none
        await self._plane.unload_model(request.path_params["name"])
        return Response(status_code=200)

    async def statistics(self, request: Request) -> Response:
        params = request.path_params
        stats = self._plane.model_statistics(params.get("name", ""), params.get("version", ""))
        return JSONResponse(
            {"model_stats": [statistics_json(n, v, s) for (n, v), s in stats.items()]}
        )


def metadata_json(meta: ModelMetadata) -> dict[str, Any]:
    """KServe REST model metadata."""

    def tensors(specs: tuple[TensorMetadata, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": tensors(meta.inputs),
        "outputs": tensors(meta.outputs),
    }


def _duration(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def statistics_json(name: str, version: str, stats: VersionStatistics) -> dict[str, Any]:
    """One model version's statistics in Triton's REST layout (durations in nanoseconds)."""
    zero = _duration(Duration())
    return {
        "name": name,
        "version": version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": zero,
            "compute_infer": _duration(stats.compute_infer),
            "compute_output": zero,
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": zero,
                "compute_infer": _duration(d),
                "compute_output": zero,
            }
            for size, d in sorted(stats.batches.items())
        ],
    }


def check_declared_length(request: Request, limit: int) -> None:
    """413 when the Content-Length header announces more than `limit` bytes (nothing read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def discard_body(request: Request, limit: int) -> None:
    """Read and drop the body of a refused request (at most `limit` bytes), so the client, still
    sending, reads the refusal instead of a connection reset. Nothing is kept or parsed. A
    client that asked `Expect: 100-continue` was never told to send it: nothing is read."""
    if request.headers.get("expect", "").lower() == "100-continue":
        return
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed if Content-Encoding says so; 413 above `limit` bytes."""
    check_declared_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    return _decompressed(body, encoding, limit)


def _decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise HTTPException(
            415, f"Content-Encoding {encoding!r} not supported; use gzip or deflate"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"the body is not valid {encoding}: {exc}") from exc
    if len(plain) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    return plain


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is over {limit} bytes (--max-message-bytes)")


async def _json_object(request: Request, limit: int) -> dict[str, Any]:
    """A small optional JSON object body ({} when empty)."""
    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the request body is not JSON: {exc}") from exc
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:  # e.g. a 5000-digit integer
        reason = type(exc).__name__
        raise InvalidInputError(f"the request body is not usable JSON ({reason})") from exc
    if not isinstance(value, dict):
        raise InvalidInputError("the request body must be a JSON object")
    return value
